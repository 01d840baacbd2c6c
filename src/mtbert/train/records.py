"""What a run writes besides its model: TensorBoard points, log lines, a mixture's routing and the prediction files."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from mtbert.data.files import write_predictions
from mtbert.data.task_data import TaskData, read_task
from mtbert.data.task_files import split_file
from mtbert.inference.evaluate import predict
from mtbert.inference.saved import load_model
from mtbert.model.tasks import TASKS
from mtbert.train.setup import Run, place_model, prediction_file, read_dev, set_dropout

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)


def log_step(writer: SummaryWriter, bar: tqdm, values: dict[str, float], lr: float, step: int) -> None:
    """Each task's weighted loss and the lr to TensorBoard, their sum to the progress bar."""
    bar.set_postfix(loss=f"{sum(values.values()):.3f}")
    for t, v in values.items():
        writer.add_scalar(f"train_loss/{t}", v, step)
    writer.add_scalar("lr", lr, step)


def log_epoch(
    writer: SummaryWriter,
    epoch: int,
    epochs: int,
    metrics: dict[str, float],
    train_s: float,
    total_s: float,
    routing: dict[str, float],
) -> None:
    """An epoch's dev metrics (and a mixture's routing, see routing_shares) to TensorBoard and the log, with its
    training and evaluation time."""
    for key, value in metrics.items():
        writer.add_scalar(f"dev/{key}", value, epoch)
    for key, value in routing.items():
        writer.add_scalar(f"experts/{key}", value, epoch)
    scores = " ".join(f"{k}={v:.3f}" for k, v in metrics.items())
    log.info("epoch %d/%d: %s (training %.1f s, evaluation %.1f s)", epoch, epochs, scores, train_s, total_s - train_s)
    if routing:
        shares = " ".join(f"{v:.0%}" for k, v in routing.items() if k.endswith("_share"))
        weights = " ".join(f"{v:.2f}" for k, v in routing.items() if k.endswith("_weight"))
        log.info("epoch %d: sentences per expert %s (mean gate weights %s)", epoch, shares, weights)


def routing_shares(run: Run) -> dict[str, float]:
    """A mixture of experts' routing in the epoch just trained, summed over the ranks: "expert_K_share", the share
    of sentences whose top expert is K, and "expert_K_weight", its mean gate weight. Empty without a mixture."""
    if run.model.moe is None:
        return {}
    routed = run.model.moe.take_routing()
    routed = sum(r for r in run.world.gather(routed.cpu() if routed is not None else None) if r is not None)
    if not isinstance(routed, torch.Tensor):
        return {}
    counts, weights = routed / routed[0].sum()
    shares = {f"expert_{k}_share": float(v) for k, v in enumerate(counts)}
    return shares | {f"expert_{k}_weight": float(v) for k, v in enumerate(weights)}


def write_predictions_of(run: Run, split: str, data: dict[str, TaskData], predictions: dict[str, np.ndarray]) -> None:
    """Writes predictions to the original project's files, named by the --{task}_{split}_out flags."""
    for t, preds in predictions.items():
        out = prediction_file(run.cfg, t, split)
        write_predictions(out, TASKS[t].prediction_header, data[t].examples.ids, TASKS[t].written(preds))
        log.info("wrote %s", out)


def write_test_predictions(run: Run) -> None:
    """Test predictions of the best model, read back from where it was saved. A task without a test file is left
    out with a warning (--smoketest: predicted on its first dev rows instead, to try the set-up)."""
    cfg = run.cfg
    model, tokenizer, _ = load_model(run.save_to)
    set_dropout(model, cfg.hidden_dropout_prob)
    place_model(model, cfg, run.world.device, run.speed)
    test_data = {}
    for t in cfg.active_tasks:
        path = split_file(cfg, t, "test")
        if path is None:
            log.info("%s has no test file, so no test predictions", t)
        elif path.is_file():
            test_data[t] = read_task(path, t, tokenizer, require_labels=False, tagger=run.tagger)
        elif cfg.smoketest:
            log.warning("%s: no such file; --smoketest writes %s test predictions of dev rows", path, t)
            test_data[t] = read_dev(cfg, t, tokenizer, run.tagger)
        else:
            log.warning("%s: no such file, so no %s test predictions", path, t)
    write_predictions_of(run, "test", test_data, predict(model, test_data, cfg.precision, progress=True))
