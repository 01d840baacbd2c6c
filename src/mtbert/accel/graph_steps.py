"""Recorded training steps (--graph_steps): train_step's computation recorded once per step shape as a CUDA graph,
and replayed."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from mtbert.accel.passes import PassInputs, ShapedPasses
from mtbert.data.task_data import TaskData
from mtbert.errors import MtbertError
from mtbert.inference.precision import autocast
from mtbert.model.multitask import MultitaskModel, batch_sentences, batch_sizes
from mtbert.train.step import backward_and_update, step_batch, task_losses


@dataclass
class RecordedShape:
    """One shape of training step: its tensors on the device, which each step of the shape overwrites, and its
    CUDA graph once recorded."""

    inputs: PassInputs  # the step's sentences as one encoder pass
    labels: dict[str, torch.Tensor]  # task -> (b,)
    graph: torch.cuda.CUDAGraph | None = None
    losses: torch.Tensor | None = None  # (tasks,): the weighted losses, which the graph writes


class GraphSteps:
    """Training steps as train_step computes them (AdamW, one process), recorded as CUDA graphs, one per step shape,
    and replayed: the GPU then runs a step's kernels (over a thousand for MiniLM) without waiting for Python to launch
    them one by one, which is what bounds a small encoder's step (--graph_steps).

    A step's sentences go through the encoder as one pass, padded to a multiple of 16 tokens (unpadded: their real
    tokens, counted up to a multiple of 1,024), so that the shapes are few; a shape is the pass's rows and length,
    the number of tokens encoded, the lengths of the attention groups (see passes.ATTENTION_GROUPS) and the tasks'
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
        # the passes' settings (--unpad, --torch_compile); a model with the readable passes gets eager, padded ones
        self.passes = model.passes if isinstance(model.passes, ShapedPasses) else ShapedPasses(None, "off", 0, False)
        self.device = model.device
        self.record = self.device.type == "cuda" if record is None else record
        if self.record:
            for group in optimizer.param_groups:  # a recorded update must read its lr, and count its steps, on the GPU
                group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32).to(self.device)
                group["capturable"] = True
        self.pool = torch.cuda.graph_pool_handle() if self.record else None
        self.shapes: dict[tuple, RecordedShape] = {}

    def __call__(self, data: dict[str, TaskData], rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """One optimizer step on the batches `rows`; returns the weighted losses (not synchronised)."""
        batch, labels = step_batch(data, rows)
        inputs = self.passes.inputs(self.model, batch_sentences(batch), recorded=True)
        sizes = batch_sizes(batch)
        tokens = len(inputs.tokens) if inputs.tokens is not None else None
        groups = inputs.groups.shapes if inputs.groups is not None else None
        key = (*inputs.ids.shape, inputs.padded, tokens, groups, *((t, *n) for t, n in sizes.items()))
        shape = self.shapes.get(key)
        if shape is None:
            shape = self.shapes[key] = RecordedShape(
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

    def _first(self, shape: RecordedShape, sizes: dict[str, list[int]]) -> torch.Tensor:
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
            raise MtbertError(
                f"--graph_steps: a training step could not be recorded as a CUDA graph ({e}); "
                "train without --graph_steps"
            ) from e
        return losses

    def _step(self, shape: RecordedShape, sizes: dict[str, list[int]]) -> torch.Tensor:
        """train_step's computation on the shape's device tensors; returns the weighted losses (tasks,)."""
        with autocast(self.device, self.precision, cache=False):
            outputs = self.model.apply_heads(self.passes.run(self.model, shape.inputs), sizes)
        losses = task_losses({t: out.float() for t, out in outputs.items()}, shape.labels)
        weighted = torch.stack([self.weights[t] * loss for t, loss in losses.items()])  # (tasks,)
        backward_and_update(weighted.sum(), self.model, self.optimizer, self.clip)
        return weighted.detach()
