"""The three tasks as data: files, columns, head, loss, prediction and metric of each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr
from torch import nn

from mtbert.model.heads import ParaphraseHead, SentimentHead, SimilarityHead


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

    @property
    def pair(self) -> bool:
        """Whether a row is a sentence pair, which --pair_encoding cross encodes as one sequence."""
        return len(self.text_columns) == 2

    def unit_score(self, value: float) -> float:
        """The metric mapped to [0, 1] for the mean dev score: Pearson r becomes (r + 1) / 2."""
        return (value + 1) / 2 if self.metric_name == "pearson" else value


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


def sentences_per_step(tasks: tuple[str, ...], batch_size: int) -> int:
    """How many sentences a step of `batch_size` examples per task sends through the encoder (pairs count two)."""
    return batch_size * sum(len(TASKS[t].text_columns) for t in tasks)
