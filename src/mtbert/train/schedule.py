"""Learning-rate schedules: plateau, cosine, none."""

from __future__ import annotations

import math

import torch

# What build_scheduler returns: a per-step schedule, or one stepped per epoch with the dev score (plateau).
Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, total_steps: int) -> Scheduler | None:
    """plateau: halve the lr after an epoch without a better dev score (stepped per epoch with the score);
    cosine: cosine decay to 0 over `total_steps` optimizer steps (stepped per step); none: constant."""
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0)
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
    return None
