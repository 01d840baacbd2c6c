"""Predictions and dev metrics of the multitask model on tokenized task data."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from mtbert.data.task_data import TaskData
from mtbert.inference.precision import autocast
from mtbert.model.multitask import MultitaskModel
from mtbert.model.tasks import TASKS


def predict(
    model: MultitaskModel, data: dict[str, TaskData], precision: str = "auto", progress: bool = False
) -> dict[str, np.ndarray]:
    """Predictions of every task's rows, all sentences encoded in one length-sorted pass (with a progress bar of
    the sentences encoded if `progress`)."""
    return predictions_of(outputs(model, data, precision, progress))


def predictions_of(raw: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The heads' raw outputs of each task as the predictions written to files."""
    return {task: TASKS[task].predict(out).numpy() for task, out in raw.items()}


@torch.inference_mode()
def outputs(
    model: MultitaskModel, data: dict[str, TaskData], precision: str = "auto", progress: bool = False
) -> dict[str, torch.Tensor]:
    """The heads' raw outputs of every task's rows on the CPU, in float32 (SST: the five logits of each row)."""
    if not data:
        return {}
    was_training = model.training
    model.eval()
    sentences = sum(len(d.tokens[0]) * model.sequences_per_row(task) for task, d in data.items())
    bar = tqdm(total=sentences, desc="encoding", unit="sentence", disable=None if progress else True, leave=False)
    with bar, autocast(model.device, precision):  # (the bar on stderr if it is a terminal, removed when done)
        tags = {task: d.tags for task, d in data.items()} if model.tags is not None else None
        raw = model({task: d.tokens for task, d in data.items()}, tags, bar.update)
    model.train(was_training)
    return {task: out.float().cpu() for task, out in raw.items()}


def evaluate(
    model: MultitaskModel, data: dict[str, TaskData], precision: str = "auto", progress: bool = False
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics keyed "{task}/{metric}" for the labelled tasks, plus "mean" (each mapped to [0, 1]) when all are."""
    predictions = predict(model, data, precision, progress)
    return scores(predictions, data), predictions


def scores(predictions: dict[str, np.ndarray], data: dict[str, TaskData]) -> dict[str, float]:
    """The metrics of `evaluate` for given predictions of the tasks' rows."""
    metrics: dict[str, float] = {}
    for task, d in data.items():
        if d.labels is not None:
            metrics |= TASKS[task].metrics(predictions[task], d.labels.numpy())
    if all(d.labels is not None for d in data.values()):
        metrics["mean"] = mean_score(metrics)
    return metrics


def mean_score(metrics: dict[str, float]) -> float:
    """Model selection score: the mean of the tasks' main metrics, a correlation r mapped to (r + 1) / 2."""
    main = {f"{t}/{spec.metric_name}": spec for t, spec in TASKS.items()}
    return float(np.mean([main[key].unit_score(v) for key, v in metrics.items() if key in main]))
