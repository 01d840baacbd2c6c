"""The tasks as data: files, columns, head, loss, prediction and metrics of each. TASKS holds the three built-in
tasks, and the tasks declared in a --tasks file once `register` has added them (training does, and loading a model
that was trained on them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from torch import nn

from mtbert.model.heads import (
    ConcatPairHead,
    CrossPairHead,
    ParaphraseHead,
    SentenceHead,
    SentimentHead,
    SimilarityHead,
)
from mtbert.task_file import BUILTIN, TaskDecl


@dataclass(frozen=True)
class TaskSpec:
    name: str
    files: dict[str, str]  # split -> default file name in --data_dir
    text_columns: tuple[str, ...]
    label_column: str
    parse_label: Callable[[str], float]  # raises ValueError with the reason
    make_head: Callable[[int, float], nn.Module]  # (hidden_size, dropout) -> head
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (head output, labels) -> scalar
    # head output -> per-example loss against labels drawn from the model's own predictive distribution (SophiaG)
    sampled_loss: Callable[[torch.Tensor], torch.Tensor]
    # (head output, head output) -> their mean symmetric divergence: SMART's smoothness term (train/smart.py)
    divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    predict: Callable[[torch.Tensor], torch.Tensor]  # head output -> predictions as written to files
    metric_name: str
    metric: Callable[[np.ndarray, np.ndarray], float]  # (predictions, labels) -> metric
    prediction_header: str  # column title of the original project's prediction files
    outputs: int = 1  # the head's outputs per row: K classes, or 1 (a binary logit, a score)
    more_metrics: dict[str, Callable[[np.ndarray, np.ndarray], float]] = field(default_factory=dict)
    label_names: tuple[str, ...] | None = None  # class names in label order (written to prediction files)
    cross: bool = False  # a declared pair task with head `cross`: its pairs are always encoded as one sequence
    decl: TaskDecl | None = None  # a declared task's declaration (saved with a model); None: built-in

    @property
    def pair(self) -> bool:
        """Whether a row is a sentence pair, which --pair_encoding cross encodes as one sequence."""
        return len(self.text_columns) == 2

    def unit_score(self, value: float) -> float:
        """The metric mapped to [0, 1] for the mean dev score: a correlation r becomes (r + 1) / 2."""
        return (value + 1) / 2 if self.metric_name in ("pearson", "spearman") else value

    def written(self, predictions: np.ndarray) -> np.ndarray:
        """Predictions as prediction files hold them: the class names of a task that declares them."""
        if self.label_names is None:
            return predictions
        return np.asarray(self.label_names, dtype=object)[predictions.astype(np.int64)]

    def metrics(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Every metric of the task, keyed "{task}/{metric}", the main one (metric_name) first."""
        named = {self.metric_name: self.metric} | self.more_metrics
        return {f"{self.name}/{name}": fn(predictions, labels) for name, fn in named.items()}


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise ValueError("not a number") from None


def _class_label(cell: str) -> float:
    value = _number(cell)
    if value != int(value) or not 0 <= value <= 4:
        raise ValueError("expected a class 0..4")
    return value


def _binary_label(cell: str) -> float:
    value = _number(cell)
    if value not in (0.0, 1.0):
        raise ValueError("expected 0 or 1")
    return value


def _score_label(cell: str) -> float:
    value = _number(cell)
    if not 0.0 <= value <= 5.0:
        raise ValueError("expected a score in 0..5")
    return value


# Sampled labels for the Gauss-Newton-Bartlett estimator (optim.gauss_newton_bartlett): drawn from the head's own
# predictive distribution, without gradient, so that the expected squared gradient is the Gauss-Newton matrix of
# the task's loss. STS is a regression: its MSE (s - y)^2 is the negative log-likelihood of a Gaussian N(s, 1/2)
# (up to a constant), so the labels are drawn from that Gaussian; then E[(d/ds (s - y)^2)^2] = 4 * 1/2 = 2, exactly
# the MSE's second derivative, and SophiaG covers the regression task as well.


def _sampled_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    labels = torch.distributions.Categorical(logits=logits.detach()).sample()
    return F.cross_entropy(logits, labels, reduction="none")  # (B,)


def _sampled_binary_cross_entropy(logit: torch.Tensor) -> torch.Tensor:
    labels = torch.bernoulli(torch.sigmoid(logit.detach()))
    return F.binary_cross_entropy_with_logits(logit, labels, reduction="none")  # (B,)


def _sampled_squared_error(score: torch.Tensor) -> torch.Tensor:
    labels = score.detach() + torch.randn_like(score) * 0.5**0.5  # y ~ N(s, 1/2)
    return (score - labels) ** 2  # (B,)


# Symmetric divergences of two outputs, for SMART: KL(p||q) + KL(q||p) = sum_k (p_k - q_k)(log p_k - log q_k); for
# a Bernoulli logit that is (p - q)(a - b); a regression's outputs differ by their squared error.


def _symmetric_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    log_p, log_q = F.log_softmax(a, dim=-1), F.log_softmax(b, dim=-1)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1).mean()


def _symmetric_binary_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((torch.sigmoid(a) - torch.sigmoid(b)) * (a - b)).mean()


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float((predictions == labels).mean())


def _pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    if len(labels) < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0  # undefined; a constant predictor is worth nothing
    return float(pearsonr(predictions, labels)[0])


def _spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    if len(labels) < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    return float(spearmanr(predictions, labels)[0])


def _f1(predictions: np.ndarray, labels: np.ndarray, positive: float) -> float:
    hit = float(((predictions == positive) & (labels == positive)).sum())
    guessed, actual = float((predictions == positive).sum()), float((labels == positive).sum())
    return 2 * hit / (guessed + actual) if guessed + actual else 0.0


def _binary_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class (label 1)."""
    return _f1(predictions, labels, 1.0)


def _macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """The mean F1 over the classes that occur in the labels or the predictions."""
    classes = np.union1d(np.unique(labels), np.unique(predictions))
    return float(np.mean([_f1(predictions, labels, c) for c in classes])) if len(classes) else 0.0


SENTIMENT_NAMES = ("very negative", "negative", "neutral", "positive", "very positive")  # SST-5's labels 0..4

TASKS: dict[str, TaskSpec] = {
    "sst": TaskSpec(
        name="sst",
        files={"train": "ids-sst-train.csv", "dev": "ids-sst-dev.csv", "test": "ids-sst-test-student.csv"},
        text_columns=("sentence",),
        label_column="sentiment",
        parse_label=_class_label,
        make_head=SentimentHead,
        loss=lambda logits, y: F.cross_entropy(logits, y.long()),
        sampled_loss=_sampled_cross_entropy,
        divergence=_symmetric_kl,
        predict=lambda logits: logits.argmax(-1),
        metric_name="accuracy",
        metric=_accuracy,
        prediction_header="Predicted_Sentiment",
        outputs=5,
    ),
    "para": TaskSpec(
        name="para",
        files={"train": "quora-train.csv", "dev": "quora-dev.csv", "test": "quora-test-student.csv"},
        text_columns=("sentence1", "sentence2"),
        label_column="is_duplicate",
        parse_label=_binary_label,
        make_head=ParaphraseHead,
        loss=lambda logit, y: F.binary_cross_entropy_with_logits(logit, y.float()),
        sampled_loss=_sampled_binary_cross_entropy,
        divergence=_symmetric_binary_kl,
        predict=lambda logit: (logit > 0).long(),
        metric_name="accuracy",
        metric=_accuracy,
        prediction_header="Predicted_Is_Paraphrase",
    ),
    "sts": TaskSpec(
        name="sts",
        files={"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test-student.csv"},
        text_columns=("sentence1", "sentence2"),
        label_column="similarity",
        parse_label=_score_label,
        make_head=lambda hidden_size, dropout: SimilarityHead(),
        loss=lambda score, y: F.mse_loss(score, y.float()),
        sampled_loss=_sampled_squared_error,
        divergence=lambda a, b: F.mse_loss(a, b),
        predict=lambda score: score.clamp(0.0, 5.0),
        metric_name="pearson",
        metric=_pearson,
        prediction_header="Predicted_Similiary",  # sic: the original project's spelling
    ),
}


# What a declared task's kind gives its spec: loss, sampled loss (SophiaG), divergence (SMART), metric functions.
KINDS = {
    "classes": dict(
        loss=lambda logits, y: F.cross_entropy(logits, y.long()),
        sampled_loss=_sampled_cross_entropy,
        divergence=_symmetric_kl,
        metrics={"accuracy": _accuracy, "f1": _macro_f1},
    ),
    "binary": dict(
        loss=lambda logit, y: F.binary_cross_entropy_with_logits(logit, y.float()),
        sampled_loss=_sampled_binary_cross_entropy,
        divergence=_symmetric_binary_kl,
        metrics={"accuracy": _accuracy, "f1": _binary_f1},
    ),
    "regression": dict(
        loss=lambda score, y: F.mse_loss(score, y.float()),
        sampled_loss=_sampled_squared_error,
        divergence=lambda a, b: F.mse_loss(a, b),
        metrics={"pearson": _pearson, "spearman": _spearman},
    ),
}


def label_parser(d: TaskDecl) -> Callable[[str], float]:
    """A declared task's label cells: a class name or index (classes, binary), or a number in the range."""
    if d.kind == "regression":
        low, high = d.range

        def score(cell: str) -> float:
            value = _number(cell)
            if not low <= value <= high:
                raise ValueError(f"expected a score in {low:g}..{high:g}")
            return value

        return score
    names = {name: float(i) for i, name in enumerate(d.labels or ())}
    count = d.classes if d.kind == "classes" else 2
    expected = f"one of {', '.join(d.labels)}" if d.labels else f"a class 0..{count - 1}"

    def label(cell: str) -> float:
        if cell.strip() in names:
            return names[cell.strip()]
        try:
            value = float(cell)
        except ValueError:
            raise ValueError(f"expected {expected}") from None
        if value != int(value) or not 0 <= value < count:
            raise ValueError(f"expected {expected}")
        return value

    return label


def head_maker(d: TaskDecl) -> Callable[[int, float], nn.Module]:
    if d.head == "cosine":
        return lambda hidden_size, dropout: SimilarityHead(*d.range)
    head = {"mlp": ConcatPairHead if d.pair else SentenceHead, "pair": ParaphraseHead, "cross": CrossPairHead}[d.head]
    return lambda hidden_size, dropout: head(hidden_size, dropout, d.classes)


def declared_spec(d: TaskDecl) -> TaskSpec:
    """The spec of a task declared in a --tasks file."""
    kind = KINDS[d.kind]
    files = {"train": d.train, "dev": d.dev} | ({"test": d.test} if d.test else {})
    if d.kind == "classes":
        predict = lambda logits: logits.argmax(-1)  # noqa: E731
    elif d.kind == "binary":
        predict = lambda logit: (logit > 0).long()  # noqa: E731
    else:
        predict = lambda score: score.clamp(*d.range)  # noqa: E731
    main, *more = d.metrics
    return TaskSpec(
        name=d.name,
        files=files,
        text_columns=d.text,
        label_column=d.label,
        parse_label=label_parser(d),
        make_head=head_maker(d),
        loss=kind["loss"],
        sampled_loss=kind["sampled_loss"],
        divergence=kind["divergence"],
        predict=predict,
        metric_name=main,
        metric=kind["metrics"][main],
        prediction_header=f"Predicted_{d.name}",
        outputs=d.classes,
        more_metrics={name: kind["metrics"][name] for name in more},
        label_names=d.labels,
        cross=d.head == "cross",
        decl=d,
    )


def register(declared: dict[str, TaskDecl] | list[TaskDecl]) -> tuple[str, ...]:
    """Adds declared tasks to TASKS (a later declaration of a name replaces an earlier one); returns their names."""
    decls = list(declared.values()) if isinstance(declared, dict) else list(declared)
    for d in decls:
        if d.name in BUILTIN:
            raise ValueError(f"task {d.name!r}: the name of a built-in task")
        TASKS[d.name] = declared_spec(d)
    return tuple(d.name for d in decls)


def sentences_per_step(tasks: tuple[str, ...], batch_size: int) -> int:
    """How many sentences a step of `batch_size` examples per task sends through the encoder (pairs count two)."""
    return batch_size * sum(len(TASKS[t].text_columns) for t in tasks)
