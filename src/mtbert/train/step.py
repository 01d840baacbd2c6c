"""One optimizer step of multitask training: forward under autocast, the weighted task losses, Sophia's Hessian
refresh, backward, clipping, the update."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mtbert.data.task_data import TaskData
from mtbert.inference.precision import autocast
from mtbert.model.multitask import MultitaskModel
from mtbert.model.tasks import TASKS
from mtbert.train.optim import Sophia, SophiaG, SophiaH
from mtbert.train.smart import Smart
from mtbert.train.surgery import PCGrad


def compute_losses(
    model: MultitaskModel, data: dict[str, TaskData], rows: dict[str, np.ndarray], device: torch.device | str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The loss of each task on its batch `rows`, and the heads' outputs; all the batches' sentences go through
    the encoder together."""
    outputs = forward(model, data, rows)
    labels = {t: data[t].labels[index].to(device, non_blocking=True) for t, index in rows.items()}
    return task_losses(outputs, labels), outputs


def forward(model: nn.Module, data: dict[str, TaskData], rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The heads' outputs (float32) on each task's batch `rows`."""
    batch, _ = step_batch(data, rows)
    tags = {t: data[t].tag_rows(index) for t, index in rows.items()} if model_tagged(data) else None
    return {t: out.float() for t, out in model(batch, tags=tags).items()}


def model_tagged(data: dict[str, TaskData]) -> bool:
    """Whether the data carries tags (--additional_input), which the model then takes."""
    return all(d.tags is not None for d in data.values())


def step_batch(
    data: dict[str, TaskData], rows: dict[str, np.ndarray]
) -> tuple[dict[str, list[list[list[int]]]], dict[str, torch.Tensor]]:
    """The batches `rows` of each task: its token-id lists per text column, and its labels (on the host)."""
    batch = {t: data[t].rows(index) for t, index in rows.items()}
    return batch, {t: data[t].labels[index] for t, index in rows.items()}


def task_losses(outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each task's mean loss: its head's output (float32) against its labels (on the same device)."""
    return {t: TASKS[t].loss(out, labels[t]) for t, out in outputs.items()}


def backward_and_update(
    loss: torch.Tensor | None, model: nn.Module, optimizer: torch.optim.Optimizer, clip: float
) -> None:
    """Backward (unless the gradients are in place: loss None), the gradients' norm clipped to `clip` (if above 0),
    the optimizer's update; gradients released."""
    if loss is not None:
        loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_step(
    ddp_model: nn.Module,
    model: MultitaskModel,
    optimizer: torch.optim.Optimizer,
    data: dict[str, TaskData],
    rows: dict[str, np.ndarray],
    weights: dict[str, float],
    clip: float,
    device: torch.device | str,
    precision: str = "auto",
    smart: Smart | None = None,
    surgery: PCGrad | None = None,
) -> dict[str, torch.Tensor]:
    """One optimizer step on the batches `rows`, each task's mean loss weighted by `weights` (its loss weight
    times its share of the batch, see Distributed.shard); the forward pass runs through `ddp_model`, `model` or its
    DDP wrapper. `smart` (--smart) adds SMART's smoothness term to the loss; `surgery` (--grad_surgery) replaces
    the backward pass of the summed loss by PCGrad's (which averages over processes itself: it runs `model`).
    Returns the weighted losses (not synchronised)."""
    refresh = isinstance(optimizer, Sophia) and optimizer.hessian_due()
    twice = twice_differentiable() if refresh and isinstance(optimizer, SophiaH) else contextlib.nullcontext()
    runs = model if surgery is not None else ddp_model
    with twice:  # to the end of backward, which recomputes the forward pass under --activation_checkpointing
        with autocast(device, precision):
            losses, outputs = compute_losses(runs, data, rows, device)
            losses = {t: weights[t] * v for t, v in losses.items()}
            if smart is not None:
                losses["smart"] = smart(lambda: forward(model, data, rows), model, outputs, weights)
        if model.moe is not None and model.moe.balance:  # --moe_balance: a mixture's load-balancing loss
            losses["moe_balance"] = model.moe.balance * model.moe.balance_loss()
        loss = sum(losses.values())
        if refresh:  # Sophia: refresh the diagonal Hessian estimate, every --hess_interval steps
            optimizer.update_hessian(hessian_loss(optimizer, loss, outputs, weights))
        if surgery is not None:
            surgery.backward(losses, model)
            loss = None
        backward_and_update(loss, model, optimizer, clip)
    return {t: v.detach() for t, v in losses.items()}


@contextlib.contextmanager
def twice_differentiable() -> Iterator[None]:
    """Hutchinson's estimate differentiates the forward pass twice, which only SDPA's math kernel and an eager
    encoder (not compiled, see --torch_compile) can do."""
    with sdpa_kernel(SDPBackend.MATH), torch.compiler.set_stance("force_eager"):
        yield


def hessian_loss(
    optimizer: torch.optim.Optimizer, loss: torch.Tensor, outputs: dict[str, torch.Tensor], weights: dict[str, float]
) -> torch.Tensor:
    """The loss Sophia estimates the Hessian from: the training loss (SophiaH), or each task's loss against labels
    sampled from the model's predictions, summed and divided by sqrt(batch size) (SophiaG, Gauss-Newton-Bartlett).

    SophiaG scales task t's sampled loss by sqrt(w_t): the squared gradient's cross-task terms vanish in expectation
    (sampled labels give zero-mean gradients), so its expectation is sum_t w_t GN_t, the Gauss-Newton matrix of the
    weighted loss."""
    if not isinstance(optimizer, SophiaG):
        return loss
    return sum(weights[t] ** 0.5 * TASKS[t].sampled_loss(out).sum() / len(out) ** 0.5 for t, out in outputs.items())
