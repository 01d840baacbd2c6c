"""Runs compared: their dev metrics per epoch read back from the TensorBoard logs of training, a Markdown table per
task (rows: runs, or groups of runs that differ only in their seed, as mean ± std), and PNG plots of the metrics."""

from __future__ import annotations

import ast
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtbert.errors import MtbertError
from mtbert.model.tasks import TASKS
from mtbert.task_file import BUILTIN

METRICS = [f"{t}/{TASKS[t].metric_name}" for t in BUILTIN] + ["mean"]  # the built-in tasks' first


def metrics_in(found: list[dict]) -> list[str]:
    """The metrics named in `found` (dicts keyed by metric): the built-in tasks' and the mean first, then the
    others (a declared task's) in sorted order."""
    keys = {k for d in found for k in d if "/" in k or k == "mean"}
    return [m for m in METRICS if m in keys] + sorted(keys - set(METRICS))


TITLES = {
    "sst/accuracy": "SST-5 sentiment: accuracy",
    "para/accuracy": "Quora paraphrase: accuracy",
    "sts/pearson": "STS similarity: Pearson r",
    "mean": "Mean dev score (r as (r + 1) / 2)",
}
# Settings that say where a run writes, not how it trains: never a distinguishing flag.
WHERE = {"save_dir", "logdir", "tensorboard_subfolder", "resume", "hpo_dir", "tag_cache", "save_every"}


@dataclass
class Run:
    """One training run's log: its folder, its settings and the dev metrics of each epoch (with "epoch")."""

    folder: Path
    config: dict
    history: list[dict[str, float]]
    seconds: float  # from the first to the last event of the log (the settings, the last dev metrics)

    @property
    def best(self) -> dict[str, float]:
        """The epoch whose model the run kept: the best mean dev score (the first of equals)."""
        return max(self.history, key=lambda h: h.get("mean", -math.inf))


def read_run(folder: Path) -> Run:
    """The run logged in `folder` (a TensorBoard folder written by training, resumed parts included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its reader logs every file it reads to the end
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    config: dict = {}
    if "config/text_summary" in tags["tensors"]:
        text = events.Tensors("config/text_summary")[-1].tensor_proto.string_val[0].decode("utf-8")
        config = _settings(text, folder)
    epochs: dict[int, dict[str, float]] = {}
    times = [e.wall_time for tag in tags["tensors"] for e in events.Tensors(tag)]  # the settings: at the start
    for tag in tags["scalars"]:
        for e in events.Scalars(tag):
            times.append(e.wall_time)
            if tag.startswith("dev/"):
                epochs.setdefault(e.step, {"epoch": e.step})[tag[4:]] = e.value
    if not epochs:
        raise MtbertError(f"{folder}: its log has no dev metrics yet (no epoch finished)")
    return Run(folder, config, [epochs[k] for k in sorted(epochs)], max(times) - min(times))


def _settings(text: str, folder: Path) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError:  # the settings of logs written before they were JSON: a Python dict's repr
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError) as e:
            raise MtbertError(f"{folder}: cannot read the run's settings from its log ({e})") from None


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Every run logged in or under each path (a run's TensorBoard folder, or a folder of them such as --logdir),
    in path order, then by folder name."""
    runs = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise MtbertError(f"{path}: no such folder (give TensorBoard run folders, or --logdir folders of them)")
        folders = sorted({Path(d) for d, _, files in os.walk(path) if any(".tfevents." in f for f in files)})
        if not folders:
            raise MtbertError(f"{path}: no TensorBoard logs in it or under it")
        runs += [read_run(f) for f in folders]
    return runs


def distinguishing(groups: dict[str, list[Run]]) -> list[str]:
    """The settings that are the same within each group and differ between groups (a group's seeds aside)."""
    every = [set(r.config) for runs in groups.values() for r in runs]
    keys = sorted(set.intersection(*every) - WHERE)  # a setting older logs lack is no difference
    keys = [k for k in keys if not k.endswith("_out")]

    def values(k: str) -> list[str]:
        return [json.dumps(r.config.get(k)) for r in sum(groups.values(), [])]

    same_within = [
        k for k in keys if all(len({json.dumps(r.config.get(k)) for r in rs}) == 1 for rs in groups.values())
    ]
    return [k for k in same_within if len(set(values(k))) > 1]


def flags_of(runs: list[Run], groups: dict[str, list[Run]], keys: list[str]) -> str:
    """A group's distinguishing settings as flags: those where it differs from what most groups have (all of them
    where no value is the most common)."""
    parts = []
    for k in keys:
        counts = Counter(json.dumps(g[0].config.get(k)) for g in groups.values())
        (modal, top), *rest = counts.most_common()
        v = runs[0].config.get(k)
        if json.dumps(v) == modal and not (rest and rest[0][1] == top):
            continue
        if v is True:
            parts.append(f"--{k}")
        elif v is False or v is None:
            parts.append(f"--no-{k}" if v is False else f"--{k} default")
        else:
            parts.append(f"--{k} {Path(v).name if isinstance(v, str) and '/' in v else v}")
    return " ".join(parts) or "(the shared flags)"


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def markdown(groups: dict[str, list[Run]], baseline: str | None = None) -> str:
    """One Markdown table per metric: a row per group with its flags, the best epoch's value (mean ± std over a
    group's runs) and the time; with `baseline`, each row's difference from it, marked * where it is larger than
    the two rows' standard deviations together."""
    keys = distinguishing(groups)
    flags = {name: flags_of(runs, groups, keys) for name, runs in groups.items()}
    present = metrics_in([r.best for runs in groups.values() for r in runs])
    out = []
    for metric in present:
        head = ["run", "flags", f"{metric.split('/')[-1]} (best epoch)", "runs", "minutes"]
        base = spread([r.best[metric] for r in groups[baseline]]) if baseline else None
        if base:
            head.insert(3, "vs baseline")
        lines = [f"### {TITLES.get(metric, metric)}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, runs in groups.items():
            m, s = spread([r.best[metric] for r in runs if metric in r.best])
            cells = [
                name,
                f"`{flags[name]}`",
                f"{m:.3f} ± {s:.3f}" if len(runs) > 1 else f"{m:.3f}",
                str(len(runs)),
                f"{np.mean([r.seconds for r in runs]) / 60:.1f}",
            ]
            if base:
                delta = m - base[0]
                marked = name != baseline and abs(delta) > s + base[1]
                cells.insert(3, "" if name == baseline else f"{delta:+.3f}{' *' if marked else ''}")
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    note = "Each value is the dev metric at the epoch of the best mean dev score (the model a run keeps)"
    if any(len(runs) > 1 for runs in groups.values()):
        note += "; mean ± sample standard deviation over a row's runs (seeds)"
    if baseline:
        note += "; * marks a difference from the baseline larger than both rows' standard deviations added"
    return "\n\n".join(out) + f"\n\n{note}. Minutes: a run's wall time, its mean over the row's runs.\n"


def plot(groups: dict[str, list[Run]], path: Path) -> Path:
    """A PNG of the dev metrics per epoch: a panel per metric, a line per group (its runs' mean, a band from their
    lowest to highest value)."""
    try:
        import matplotlib
    except ImportError:
        raise MtbertError("the plots need matplotlib: pip install 'mtbert[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = metrics_in([h for runs in groups.values() for r in runs for h in r.history])
    size = (4.2 * len(present), 3.6 + 0.3 * math.ceil(len(groups) / 3))
    fig, axes = plt.subplots(1, len(present), figsize=size, squeeze=False)
    for ax, metric in zip(axes[0], present, strict=True):
        for name, runs in groups.items():
            epochs = min(len(r.history) for r in runs)
            values = np.array([[r.history[e][metric] for e in range(epochs)] for r in runs])  # (runs, epochs)
            x = np.arange(1, epochs + 1)
            (line,) = ax.plot(x, values.mean(0), marker="o", label=name)
            if len(runs) > 1:
                ax.fill_between(x, values.min(0), values.max(0), color=line.get_color(), alpha=0.15)
        ax.set_title(TITLES.get(metric, metric), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    rows = math.ceil(len(labels) / 3)
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07 * rows, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(paths: list[str | Path], out: Path) -> tuple[Path, Path]:
    """`mtbert report`: the runs under `paths` compared in out/report.md and out/dev-metrics.png."""
    runs = find_runs(paths)
    names = [r.folder.name for r in runs]
    groups = {(n if names.count(n) == 1 else str(r.folder)): [r] for n, r in zip(names, runs, strict=True)}
    out.mkdir(parents=True, exist_ok=True)
    picture = plot(groups, out / "dev-metrics.png")
    table = out / "report.md"
    text = f"# Dev metrics of {len(runs)} runs\n\n{markdown(groups)}\n![dev metrics per epoch]({picture.name})\n"
    table.write_text(text, encoding="utf-8")
    return table, picture
