"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(
    model: nn.Module, heads: nn.Module, lr: float, head_lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: the task heads at `head_lr`, the shared rest (encoder, pooling) at `lr`.

    Biases and LayerNorm weights (1-d tensors) get no weight decay, as in BERT.
    """
    head_ids = {id(p) for p in heads.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in head_ids, p.ndim >= 2), []).append(p)
    param_groups = [
        {"params": ps, "lr": head_lr if in_head else lr, "weight_decay": weight_decay if decayed else 0.0}
        for (in_head, decayed), ps in groups.items()
    ]
    return torch.optim.AdamW(param_groups, lr=lr, foreach=True)


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """plateau: halve the lr after an epoch without a better dev score (stepped per epoch with the score);
    cosine: cosine decay to 0 over `total_steps` optimizer steps (stepped per step); none: constant."""
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0)
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
    return None
