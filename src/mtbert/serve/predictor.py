"""A trained multitask model ready to call: `mtbert.load(DIR)` gives a Predictor.

    >>> import mtbert
    >>> model = mtbert.load("models/finetune-4-8e-05-adamw-plateau-multitask")
    >>> model.sentiment(["A gorgeous, witty film."])        # [Sentiment(label, name, probabilities)]
    >>> model.similarity([("A man plays a guitar.", "A man is playing music.")])   # [a float in 0..5]

Every call tokenizes its texts and sends them through the encoder sorted by length, in passes of a bounded number
of padded tokens (the multitask model's own passes), so a long list costs little padding; results keep input order.
`mtbert predict`, `mtbert evaluate` and `mtbert serve` all go through this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mtbert.data.files import Examples
from mtbert.data.tagging import Tagger
from mtbert.data.task_data import TaskData, read_task, task_data
from mtbert.errors import MtbertError
from mtbert.inference.evaluate import evaluate, outputs
from mtbert.model.ensemble import Ensemble
from mtbert.model.multitask import MultitaskModel
from mtbert.model.tasks import SENTIMENT_NAMES, TASKS
from mtbert.model.tokenizer import Tokenizer


@dataclass(frozen=True)
class Sentiment:
    """SST-5: the most likely class 0..4 (very negative .. very positive), its name, and all five probabilities."""

    label: int
    name: str
    probabilities: list[float]


@dataclass(frozen=True)
class Paraphrase:
    """Quora: the probability that the two questions ask the same, and the label (1 when it is over 0.5)."""

    probability: float
    label: int


@dataclass(frozen=True)
class Classified:
    """A declared classes task: the most likely class 0..K-1, its name (the label itself where none is declared),
    and all K probabilities."""

    label: int
    name: str
    probabilities: list[float]


@dataclass(frozen=True)
class Decided:
    """A declared binary task: the probability of label 1, the label (1 when it is over 0.5) and its name."""

    probability: float
    label: int
    name: str


class Predictor:
    """A trained model (or an ensemble of several) on its device with its tokenizer (and the tagger of a model
    trained with tags)."""

    def __init__(
        self,
        model: MultitaskModel | Ensemble,
        tokenizer: Tokenizer,
        tagger: Tagger | None = None,
        precision: str = "auto",
    ):
        self.model = model.eval()
        self.dev_metrics: dict | None = None  # the dev metrics its mtbert.json records (a single saved model)
        self.tokenizer = tokenizer
        self.tagger = tagger
        self.precision = precision

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the model was trained on (its heads)."""
        return tuple(self.model.heads)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def sentiment(self, texts: Sequence[str]) -> list[Sentiment]:
        """The SST-5 class of each text."""
        return results("sst", self._raw("sst", [list(_texts(texts, "texts"))]))

    def paraphrase(self, pairs: Sequence[tuple[str, str]]) -> list[Paraphrase]:
        """Whether each pair of questions is a paraphrase."""
        return results("para", self._raw("para", _columns(pairs)))

    def similarity(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The STS similarity of each pair of sentences, 0 (unrelated) to 5 (the same meaning)."""
        return results("sts", self._raw("sts", _columns(pairs)))

    def predict(self, task: str, rows: Sequence[str] | Sequence[tuple[str, str]]) -> list:
        """Any task's results (see `results`): `rows` its texts, or its pairs of texts for a pair task."""
        self._check_task(task)
        pair = TASKS[task].pair
        return results(task, self._raw(task, _columns(rows) if pair else [list(_texts(rows, "texts"))]))

    def data(self, task: str, columns: list[list[str]], ids: list[str] | None = None) -> TaskData:
        """Unlabelled rows of `task` (one list of texts per text column), tokenized (and tagged) for this model."""
        ids = ids if ids is not None else [str(i) for i in range(1, len(columns[0]) + 1)]
        return task_data(task, Examples(Path("<input>"), ids, columns, None), self.tokenizer, self.tagger)

    def read(self, task: str, path: Path, require_labels: bool = True) -> TaskData:
        """A task's CS224N CSV file, read and tokenized (and tagged) for this model."""
        return read_task(path, task, self.tokenizer, require_labels=require_labels, tagger=self.tagger)

    def outputs(self, data: dict[str, TaskData], progress: bool = False) -> dict[str, torch.Tensor]:
        """The heads' raw outputs (on the CPU, float32) of each task's rows, all encoded in one length-sorted pass."""
        for task in data:
            self._check_task(task)
        return outputs(self.model, data, self.precision, progress)

    def evaluate(self, data: dict[str, TaskData], progress: bool = False) -> dict[str, float]:
        """The dev metrics ("{task}/{metric}", and "mean" when every task has labels) of labelled task data."""
        for task in data:
            self._check_task(task)
        return evaluate(self.model, data, self.precision, progress)[0]

    def _raw(self, task: str, columns: list[list[str]]) -> torch.Tensor:
        self._check_task(task)
        if not columns[0]:
            outputs = TASKS[task].outputs
            return torch.empty((0, outputs) if outputs > 1 else (0,))
        return self.outputs({task: self.data(task, columns)})[task]

    def _check_task(self, task: str) -> None:
        if task not in self.model.heads:
            raise MtbertError(f"this model was not trained on {task} (it has {', '.join(self.model.heads)})")


def results(task: str, raw: torch.Tensor) -> list:
    """The heads' raw outputs of `task` as results: Sentiment (SST), Paraphrase (Quora) or a float (STS) per row; a
    declared task's Classified (classes), Decided (binary) or float (regression). The labels are the predictions
    `mtbert evaluate` scores."""
    spec = TASKS[task]
    predictions = spec.predict(raw).tolist()
    if task == "sst":
        probabilities = torch.softmax(raw, -1).tolist()
        return [Sentiment(y, SENTIMENT_NAMES[y], p) for y, p in zip(predictions, probabilities, strict=True)]
    if task == "para":
        return [Paraphrase(p, y) for p, y in zip(torch.sigmoid(raw).tolist(), predictions, strict=True)]
    if spec.decl is None or spec.decl.kind == "regression":
        return predictions
    names = spec.label_names or tuple(map(str, range(max(spec.outputs, 2))))
    if spec.decl.kind == "binary":
        return [Decided(p, y, names[y]) for p, y in zip(torch.sigmoid(raw).tolist(), predictions, strict=True)]
    probabilities = torch.softmax(raw, -1).tolist()
    return [Classified(y, names[y], p) for y, p in zip(predictions, probabilities, strict=True)]


def load(
    folder: str | Path | Sequence[str | Path],
    device: str | torch.device | None = None,
    precision: str = "auto",
    tag_cache: str | None = None,
) -> Predictor:
    """A model folder saved by `mtbert train` as a Predictor on `device` (default: CUDA where there is one); several
    folders: their ensemble (mtbert.model.ensemble), the mean of their head outputs, used as one model.

    `precision`: "auto" (bf16 autocast on a GPU that has it), "fp32" or "bf16". `tag_cache`: where a model trained
    with --additional_input keeps the tags of the sentences it has seen (default: the user's cache folder).
    """
    from mtbert.accel.kernels import tune_kernels
    from mtbert.inference.saved import load_model

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MtbertError(f"device {device}: CUDA is not available on this machine")
    tune_kernels(device)
    folders = [folder] if isinstance(folder, str | Path) else list(folder)
    if not folders:
        raise MtbertError("no model folder given")
    loaded = [load_model(f) for f in folders]
    model, tokenizer, _ = loaded[0]
    if len(loaded) > 1:
        for f, (_, other, _) in zip(folders[1:], loaded[1:], strict=True):
            if not tokenizer.same_as(other):
                raise MtbertError(f"{f}: its tokenizer differs from that of {folders[0]}; an ensemble needs one")
        try:
            model = Ensemble([m for m, _, _ in loaded])
        except ValueError as e:
            raise MtbertError(f"{', '.join(map(str, folders))}: not one ensemble: {e}") from None
    tagger = Tagger(tag_cache, model.tag_vocab) if model.tag_vocab is not None else None
    predictor = Predictor(model.to(device), tokenizer, tagger, precision)
    if len(loaded) == 1:  # (an ensemble's members each have their own)
        predictor.dev_metrics = loaded[0][2].get("dev_metrics")
    return predictor


def _texts(texts: Sequence[str], what: str) -> Sequence[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what}: give a list of strings, not one string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}]: expected a string, got {type(t).__name__}")
    return texts


def _columns(pairs: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Pairs of texts as two columns."""
    if isinstance(pairs, str):
        raise TypeError("pairs: give a list of (text, text) pairs")
    first, second = [], []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or len(pair) != 2:
            raise TypeError(f"pairs[{i}]: expected two texts, got {pair!r:.60}")
        a, b = _texts(pair, f"pairs[{i}]")
        first.append(a)
        second.append(b)
    return [first, second]
