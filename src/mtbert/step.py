"""One optimizer step of multitask training: run eagerly (train_step), or recorded once per shape as a CUDA graph
and replayed (GraphSteps, --graph_steps)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mtbert.errors import MtbertError
from mtbert.model import MultitaskModel, batch_sentences, batch_sizes
from mtbert.optim import Sophia, SophiaG, SophiaH
from mtbert.precision import autocast
from mtbert.tasks import TASKS
from mtbert.tokenizer import PassInputs

if TYPE_CHECKING:
    from mtbert.training import TaskData


def compute_losses(
    model: MultitaskModel, data: dict[str, TaskData], rows: dict[str, np.ndarray], device: torch.device | str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The loss of each task on its batch `rows`, and the heads' outputs; all the batches' sentences go through
    the encoder together."""
    batch, labels = step_batch(data, rows)
    outputs = {t: out.float() for t, out in model(batch).items()}
    return task_losses(outputs, {t: y.to(device, non_blocking=True) for t, y in labels.items()}), outputs


def step_batch(
    data: dict[str, TaskData], rows: dict[str, np.ndarray]
) -> tuple[dict[str, list[list[list[int]]]], dict[str, torch.Tensor]]:
    """The batches `rows` of each task: its token-id lists per text column, and its labels (on the host)."""
    batch = {t: data[t].rows(index) for t, index in rows.items()}
    return batch, {t: data[t].labels[index] for t, index in rows.items()}


def task_losses(outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each task's mean loss: its head's output (float32) against its labels (on the same device)."""
    return {t: TASKS[t].loss(out, labels[t]) for t, out in outputs.items()}


def descend(loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer, clip: float) -> None:
    """Backward, the gradients' norm clipped to `clip` (if above 0), the optimizer's update; gradients released."""
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_step(
    net: nn.Module,
    model: MultitaskModel,
    optimizer: torch.optim.Optimizer,
    data: dict[str, TaskData],
    rows: dict[str, np.ndarray],
    weights: dict[str, float],
    clip: float,
    device: torch.device | str,
    precision: str = "auto",
) -> dict[str, torch.Tensor]:
    """One optimizer step on the batches `rows`, each task's mean loss weighted by `weights` (its loss weight
    times its share of the batch, see Distributed.shard); `net` is `model` or its DDP wrapper. Returns the weighted
    losses (not synchronised)."""
    refresh = isinstance(optimizer, Sophia) and optimizer.hessian_due()  # Sophia: every --hess_interval steps
    twice = twice_differentiable() if refresh and isinstance(optimizer, SophiaH) else contextlib.nullcontext()
    with twice, autocast(device, precision):
        losses, outputs = compute_losses(net, data, rows, device)
    losses = {t: weights[t] * v for t, v in losses.items()}
    loss = sum(losses.values())
    if refresh:
        optimizer.update_hessian(hessian_loss(optimizer, loss, outputs, weights))
    descend(loss, model, optimizer, clip)
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


@dataclass
class StepShape:
    """One shape of training step: its tensors on the device, which each step of the shape overwrites, and its
    CUDA graph once recorded."""

    inputs: PassInputs  # the step's sentences as one encoder pass
    labels: dict[str, torch.Tensor]  # task -> (b,)
    graph: torch.cuda.CUDAGraph | None = None
    losses: torch.Tensor | None = None  # (tasks,): the weighted losses, which the graph writes


class GraphSteps:
    """Training steps as train_step computes them (AdamW, one process), recorded as CUDA graphs, one per step shape,
    and replayed: the GPU then runs a step's kernels (about 1,300 for MiniLM) without waiting for Python to launch
    them one by one, which is what bounds a small encoder's step (--graph_steps).

    A step's sentences go through the encoder as one pass, padded to a multiple of 16 tokens (unpadded: their real
    tokens, counted up to a multiple of 1,024), so that the shapes are few; a shape is the pass's rows and length,
    the number of tokens encoded, the lengths of the attention groups (see model.ATTENTION_GROUPS) and the tasks'
    batch sizes. The first step of a shape runs eagerly (it trains like any other, and creates the optimizer's
    state and CUDA's lazy state before anything is recorded); then the same computation is recorded, not run, into
    a graph. All graphs share one memory pool: they run one at a time and no tensor of one is read by another (each
    step's losses are copied out). A later step of the shape copies its token ids, mask, token places and labels
    into the graph's input tensors and replays it. Dropout draws fresh masks on every replay. The recorded update
    reads each learning rate from a tensor on the GPU, which the schedulers update in place. Off CUDA nothing is
    recorded: each step runs the same computation eagerly on its shape's tensors (how the tests check it).
    """

    def __init__(
        self,
        model: MultitaskModel,
        optimizer: torch.optim.Optimizer,
        weights: dict[str, float],
        clip: float,
        precision: str,
        record: bool | None = None,
    ):
        """`record`: whether to record graphs (None: on CUDA; False runs every step eagerly, to compare)."""
        if not isinstance(optimizer, torch.optim.AdamW):
            raise MtbertError("--graph_steps records AdamW's update only; use --optimizer adamw")
        self.model, self.optimizer, self.weights, self.clip, self.precision = model, optimizer, weights, clip, precision
        self.device = model.device
        self.record = self.device.type == "cuda" if record is None else record
        if self.record:
            for group in optimizer.param_groups:  # a recorded update must read its lr, and count its steps, on the GPU
                group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32).to(self.device)
                group["capturable"] = True
        self.pool = torch.cuda.graph_pool_handle() if self.record else None
        self.shapes: dict[tuple, StepShape] = {}

    def __call__(self, data: dict[str, TaskData], rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """One optimizer step on the batches `rows`; returns the weighted losses (not synchronised)."""
        batch, labels = step_batch(data, rows)
        inputs = self.model.pass_inputs(batch_sentences(batch), recorded=True)
        sizes = batch_sizes(batch)
        tokens = len(inputs.tokens) if inputs.tokens is not None else None
        groups = inputs.groups.shapes if inputs.groups is not None else None
        key = (*inputs.ids.shape, inputs.padded, tokens, groups, *((t, *n) for t, n in sizes.items()))
        shape = self.shapes.get(key)
        if shape is None:
            shape = self.shapes[key] = StepShape(
                inputs.to(self.device), {t: y.to(self.device) for t, y in labels.items()}
            )
            losses = self._first(shape, sizes)
        else:
            pin = self.record  # page-locked host memory: the copies do not wait for the GPU
            news = [*inputs.tensors(), *labels.values()]
            for old, new in zip([*shape.inputs.tensors(), *shape.labels.values()], news, strict=True):
                old.copy_(new.pin_memory() if pin else new, non_blocking=True)
            if shape.graph is not None:
                shape.graph.replay()
                losses = shape.losses.clone()  # the next step's graph may reuse its memory
            else:
                losses = self._step(shape, sizes)
        return dict(zip(rows, losses.unbind(), strict=True))

    def _first(self, shape: StepShape, sizes: dict[str, list[int]]) -> torch.Tensor:
        """The first step of a shape: run eagerly, then (on CUDA) recorded into its graph."""
        if not self.record:
            return self._step(shape, sizes)
        side = torch.cuda.Stream()  # as PyTorch asks: the eager run before a recording on a side stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "This instance was constructed with capturable=True")  # as intended
            losses = self._step(shape, sizes)
        torch.cuda.current_stream().wait_stream(side)
        losses.record_stream(torch.cuda.current_stream())
        shape.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(shape.graph, pool=self.pool):
                shape.losses = self._step(shape, sizes)  # recorded, not run
        except RuntimeError as e:  # an operation that cannot be recorded (one that waits for the GPU, say)
            raise MtbertError(f"--graph_steps: a training step could not be recorded as a CUDA graph ({e}); "
                              "train without --graph_steps") from e  # fmt: skip
        return losses

    def _step(self, shape: StepShape, sizes: dict[str, list[int]]) -> torch.Tensor:
        """train_step's computation on the shape's device tensors; returns the weighted losses (tasks,)."""
        with autocast(self.device, self.precision, cache=False):
            outputs = self.model.apply_heads(self.model.encode(shape.inputs), sizes)
        losses = task_losses({t: out.float() for t, out in outputs.items()}, shape.labels)
        weighted = torch.stack([self.weights[t] * loss for t, loss in losses.items()])  # (tasks,)
        descend(weighted.sum(), self.model, self.optimizer, self.clip)
        return weighted.detach()
