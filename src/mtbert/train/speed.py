"""The one seam through which the GPU speed modes (mtbert.accel) change a run; by default they change nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mtbert.data.task_data import TaskData
from mtbert.model.multitask import MultitaskModel

# A replacement of the eager step: (train data, each task's batch rows) -> each task's weighted loss.
StepFn = Callable[[dict[str, TaskData], dict[str, np.ndarray]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Speed:
    """What a run does for speed beyond the readable path (padded passes of --chunk_tokens, the eager train_step).
    `mtbert.accel.modes.speed_for(cfg)` builds it from the flags (mtbert.fit); the default changes nothing."""

    # device -> None: kernel settings, made before the first kernel runs
    tune: Callable[[torch.device], None] | None = None
    # model (on its device) -> None: how it encodes (its passes, a compiled encoder)
    prepare: Callable[[MultitaskModel], None] | None = None
    # (model, optimizer, loss weights, clip, precision) -> a step that replaces train_step
    steps: Callable[[MultitaskModel, torch.optim.Optimizer, dict[str, float], float, str], StepFn] | None = None
