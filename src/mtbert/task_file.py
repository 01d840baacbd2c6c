"""Tasks declared in a file (--tasks FILE): each task's files, text and label columns, kind, head, metrics and loss
weight, read from YAML (or JSON) and checked entry by entry; an error names the file and the entry.

    builtin: [sst]               # the built-in tasks that train beside these (default: all three; [] for none)
    tasks:
      nli:
        train: nli-train.csv     # CS224N layout: tab-separated, an index column, id, the text and label columns;
        dev: nli-dev.csv         # paths relative to this file
        test: nli-test.csv       # optional
        text: [premise, hypothesis]          # one column, or two for sentence pairs
        label: label
        kind: classes            # classes (with `labels: [names]` or `classes: K`), binary, or regression
        labels: [entailment, neutral, contradiction]
        head: pair               # mlp, pair (the original's paraphrase head), cosine (regression), cross
        metrics: [accuracy, f1]  # accuracy, f1, pearson, spearman; the first one selects the best epoch
        loss_weight: 1.0
        range: [0, 5]            # regression: the labels' range, predictions clamped to it
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mtbert.errors import MtbertError
from mtbert.outputs import parse_mapping, readable_file

BUILTIN = ("sst", "para", "sts")
KINDS = ("classes", "binary", "regression")
HEADS = ("mlp", "pair", "cosine", "cross")
METRICS = {"classes": ("accuracy", "f1"), "binary": ("accuracy", "f1"), "regression": ("pearson", "spearman")}
KEYS = {"train", "dev", "test", "text", "label", "kind", "labels", "classes", "range", "head", "metrics", "loss_weight"}


@dataclass(frozen=True)
class TaskDecl:
    """One declared task, checked; file paths absolute."""

    name: str
    train: str
    dev: str
    test: str | None
    text: tuple[str, ...]
    label: str
    kind: str
    labels: tuple[str, ...] | None  # class names (classes, binary), in label order
    classes: int  # outputs of the head: K for classes, 1 for binary and regression
    range: tuple[float, float] | None  # regression
    head: str
    metrics: tuple[str, ...]
    loss_weight: float

    @property
    def pair(self) -> bool:
        return len(self.text) == 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> TaskDecl:
        """A declaration as `to_dict` wrote it (saved with a model)."""
        d = dict(saved)
        for key in ("text", "labels", "range", "metrics"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class TaskFile:
    """A task file: its declared tasks by name, and the built-in tasks to train beside them (None: all three)."""

    tasks: dict[str, TaskDecl]
    builtin: tuple[str, ...] | None


def read_task_file(path: str | Path) -> TaskFile:
    """Reads and checks a --tasks file (see the module's doc)."""
    path = readable_file("--tasks", path).resolve()
    try:
        raw = parse_mapping(path, path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise MtbertError(f"--tasks {path}: not UTF-8 text ({e})") from None
    unknown = sorted(map(str, set(raw) - {"tasks", "builtin"}))
    if unknown:
        raise MtbertError(f"{path}: unknown key(s) {', '.join(unknown)}; a task file has `tasks` and `builtin`")
    entries = raw.get("tasks")
    if not isinstance(entries, dict) or not entries:
        raise MtbertError(f"{path}: `tasks` must map task names to their settings (see `mtbert train --help`)")
    builtin = raw.get("builtin")
    if builtin is not None:
        if not isinstance(builtin, list) or not set(map(str, builtin)) <= set(BUILTIN):
            raise MtbertError(f"{path}: builtin: expected a list of {', '.join(BUILTIN)} (or []), got {builtin!r}")
        builtin = tuple(t for t in BUILTIN if t in builtin)
    return TaskFile({str(name): declare(path, str(name), entry) for name, entry in entries.items()}, builtin)


def declare(path: Path, name: str, entry: Any) -> TaskDecl:
    """One entry of a task file, checked: a MtbertError names the file and the entry."""

    def fail(problem: str) -> MtbertError:
        return MtbertError(f"{path}: task {name!r}: {problem}")

    if name in BUILTIN:
        raise fail(f"the name of a built-in task; choose another (the built-in ones are {', '.join(BUILTIN)})")
    if not name.isidentifier() or not name.isascii():
        raise fail("a task name is letters, digits and _ (it names flags, files and server routes)")
    if not isinstance(entry, dict):
        raise fail(f"expected a mapping of settings, got {entry!r}")
    unknown = sorted(map(str, set(entry) - KEYS))
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)} (the keys are {', '.join(sorted(KEYS))})")
    for key in ("train", "dev", "text", "label", "kind"):
        if entry.get(key) in (None, ""):
            raise fail(f"missing `{key}`")

    def file(key: str) -> str | None:
        value = entry.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise fail(f"{key}: expected a file path, got {value!r}")
        return str((path.parent / Path(value).expanduser()).resolve())

    text = entry["text"]
    text = (text,) if isinstance(text, str) else tuple(text) if isinstance(text, list) else None
    if text is None or len(text) not in (1, 2) or not all(isinstance(c, str) and c for c in text):
        raise fail(f"text: expected one column name or a list of two, got {entry['text']!r}")
    kind = entry["kind"]
    if kind not in KINDS:
        raise fail(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    labels, classes, value_range = entry.get("labels"), entry.get("classes"), entry.get("range")
    if labels is not None:
        if kind == "regression":
            raise fail("labels: a regression has no label names")
        if not isinstance(labels, list) or len(set(map(str, labels))) != len(labels) or len(labels) < 2:
            raise fail(f"labels: expected a list of distinct names, got {labels!r}")
        labels = tuple(map(str, labels))
        if kind == "binary" and len(labels) != 2:
            raise fail(f"labels: a binary task has two labels (for 0 and 1), got {len(labels)}")
    if kind == "classes":
        if classes is None and labels is None:
            raise fail("a classes task needs `labels: [names]` or `classes: K`")
        if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 2):
            raise fail(f"classes: expected a number of classes, at least 2, got {classes!r}")
        if classes is not None and labels is not None and classes != len(labels):
            raise fail(f"classes: {classes}, but {len(labels)} labels are named")
        classes = classes or len(labels)
    elif classes is not None:
        raise fail(f"classes: only a classes task has a number of classes (this one is {kind})")
    else:
        classes = 1
    if kind == "regression":
        if value_range is None:
            raise fail("a regression needs `range: [low, high]`, the labels' range")
        if (
            not isinstance(value_range, list)
            or len(value_range) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value_range)
            or not value_range[0] < value_range[1]
        ):
            raise fail(f"range: expected [low, high] with low < high, got {value_range!r}")
        value_range = (float(value_range[0]), float(value_range[1]))
    elif value_range is not None:
        raise fail("range: only a regression has a range")
    default_head = ("pair" if kind != "regression" else "cosine") if len(text) == 2 else "mlp"
    head = entry.get("head", default_head)
    if head not in HEADS:
        raise fail(f"head: expected one of {', '.join(HEADS)}, got {head!r}")
    if head in ("pair", "cosine", "cross") and len(text) != 2:
        raise fail(f"head: {head} reads a sentence pair; give two text columns, or head mlp")
    if head == "cosine" and kind != "regression":
        raise fail("head: cosine gives a similarity score, for a regression; take pair or cross")
    metrics = entry.get("metrics", [METRICS[kind][0]])
    metrics = [metrics] if isinstance(metrics, str) else metrics
    if not isinstance(metrics, list) or not metrics or not set(metrics) <= set(METRICS[kind]):
        raise fail(f"metrics: expected a list of {', '.join(METRICS[kind])} for a {kind} task, got {metrics!r}")
    weight = entry.get("loss_weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < float("inf"):
        raise fail(f"loss_weight: expected a number, at least 0, got {weight!r}")
    return TaskDecl(
        name=name,
        train=file("train"),
        dev=file("dev"),
        test=file("test"),
        text=text,
        label=str(entry["label"]),
        kind=kind,
        labels=labels,
        classes=classes,
        range=value_range,
        head=head,
        metrics=tuple(dict.fromkeys(metrics)),
        loss_weight=float(weight),
    )
