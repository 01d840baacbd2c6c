"""--grad_surgery pcgrad: gradient surgery for multitask learning (Yu et al., 2020, "Gradient Surgery for
Multi-Task Learning"). Each task's gradient of the shared parameters loses its component along any other task's
gradient it conflicts with (a negative dot product), so that no task's step works against another's."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def project_conflicts(grads: list[torch.Tensor], rng: np.random.Generator) -> list[torch.Tensor]:
    """PCGrad's projection of flat task gradients (P,): for each task i, the other tasks' original gradients g_j in
    a random order, g_i <- g_i - (g_i . g_j) / |g_j|^2 g_j wherever g_i . g_j < 0. Two tasks' projected gradients
    are each orthogonal to the other's original one where they conflicted, and unchanged where they did not."""
    projected = []
    for i, g in enumerate(grads):
        g = g.clone()
        for j in rng.permutation(len(grads)):
            if j == i:
                continue
            dot = torch.dot(g, grads[j])
            if dot < 0:
                g -= dot / grads[j].pow(2).sum().clamp_min(1e-20) * grads[j]
        projected.append(g)
    return projected


class PCGrad:
    """--grad_surgery pcgrad: the backward pass of a step (train.step). The order of projection is drawn from
    (seed, step), so that a resumed run draws what it would have drawn."""

    def __init__(self, seed: int, step: int = 0):
        self.seed, self.step = seed, step

    def backward(self, losses: dict[str, torch.Tensor], model: nn.Module) -> None:
        pcgrad_backward(losses, model, np.random.default_rng([self.seed, self.step]))
        self.step += 1


def pcgrad_backward(losses: dict[str, torch.Tensor], model: nn.Module, rng: np.random.Generator) -> None:
    """Sets the .grad of `model`'s trainable parameters as PCGrad does: every loss's gradient on its own, projected
    on the parameters that more than one loss reaches (the shared encoder and pooling), summed; the parameters one
    loss alone reaches (its head) get that loss's plain gradient. Under torchrun each loss's gradient is first
    averaged over the processes (DDP's mean), so that every process projects the same gradients."""
    params = [p for p in model.parameters() if p.requires_grad]
    names = list(losses)
    per_loss = []  # one list of gradients (or None where a loss does not reach a parameter) per loss
    for k, name in enumerate(names):
        retain = k < len(names) - 1
        per_loss.append(torch.autograd.grad(losses[name], params, retain_graph=retain, allow_unused=True))
    shared = [sum(g[i] is not None for g in per_loss) > 1 for i in range(len(params))]
    world = dist.get_world_size() if dist.is_initialized() else 1
    flats = []
    for grads in per_loss:
        flat = torch.cat([flat_grad(g, p) for g, p, s in zip(grads, params, shared, strict=True) if s])
        if world > 1:
            dist.all_reduce(flat)
            flat /= world
        flats.append(flat)
    merged = sum(project_conflicts(flats, rng)) if flats and flats[0].numel() else None
    at = 0
    for i, p in enumerate(params):
        if shared[i]:
            p.grad = merged[at : at + p.numel()].view_as(p).to(p.dtype)
            at += p.numel()
            continue
        own = [g[i] for g in per_loss if g[i] is not None]
        if own:
            grad = own[0]
            if world > 1:
                grad = grad.clone()
                dist.all_reduce(grad)
                grad /= world
            p.grad = grad


def flat_grad(grad: torch.Tensor | None, param: torch.Tensor) -> torch.Tensor:
    """A gradient flattened (float32), zeros where a loss does not reach the parameter."""
    return (grad if grad is not None else torch.zeros_like(param)).reshape(-1).float()
