"""--smart WEIGHT: SMART's smoothness-inducing adversarial regularizer (Jiang et al., 2020, "SMART: Robust and
Efficient Fine-Tuning for Pre-trained Natural Language Models through Principled Regularized Optimization").

The term is the divergence between the heads' outputs on the input embeddings and on the embeddings plus the
perturbation, within an L-infinity ball of radius eps, that (approximately) changes the outputs most:

    R = sum_t w_t * D_t(f_t(x), f_t(x + delta)),   delta = argmax_{|delta|_inf <= eps} D(f(x), f(x + delta))

D_t is the task's symmetric divergence (TaskSpec.divergence: symmetric KL for the classifiers, squared error for the
regression). delta starts as N(0, eps^2) noise and takes `steps` steps of projected gradient ascent, each
delta <- clip(delta + STEP_SIZE * g / |g|_inf, -eps, eps) per token, as the paper's Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mtbert.model.multitask import MultitaskModel
from mtbert.model.tasks import TASKS

STEP_SIZE = 1e-3  # the paper's eta


class EmbeddingNoise:
    """While entered, adds a perturbation to the output of every encoder's embedding layer, one tensor per call in
    call order: the first forward pass draws them (N(0, eps^2), differentiable), later ones reuse them, so that the
    same batch (encoded in the same passes) sees the same perturbation."""

    def __init__(self, model: MultitaskModel, eps: float):
        self.model, self.eps = model, eps
        self.deltas: list[torch.Tensor] = []
        self.calls = 0
        self.handles: list = []

    def __enter__(self) -> EmbeddingNoise:
        self.handles = [enc.emb.register_forward_hook(self.add) for enc in self.model.encoders()]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def add(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if self.calls == len(self.deltas):
            self.deltas.append((torch.randn_like(output) * self.eps).requires_grad_())
        delta = self.deltas[self.calls]
        self.calls += 1
        return output + delta

    def rerun(self) -> None:
        """The next forward pass reuses the perturbations from the first."""
        self.calls = 0

    def ascend(self, grads: tuple[torch.Tensor, ...]) -> None:
        """One step of projected gradient ascent on each perturbation, per token in the L-infinity norm."""
        for k, (delta, g) in enumerate(zip(self.deltas, grads, strict=True)):
            step = g / g.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)
            self.deltas[k] = (delta + STEP_SIZE * step).clamp(-self.eps, self.eps).detach().requires_grad_()


class Smart:
    """SMART's term for a training step (train.step calls it after the plain forward pass)."""

    def __init__(self, weight: float, eps: float, steps: int):
        self.weight, self.eps, self.steps = weight, eps, steps

    def __call__(
        self,
        forward: Callable[[], dict[str, torch.Tensor]],
        model: MultitaskModel,
        outputs: dict[str, torch.Tensor],
        weights: dict[str, float],
    ) -> torch.Tensor:
        """The weighted smoothness term against the step's `outputs`; `forward()` runs the model again on the step's
        batch (float32 outputs)."""
        clean = {t: out.detach() for t, out in outputs.items()}
        with EmbeddingNoise(model, self.eps) as noise:
            for _ in range(self.steps):
                noise.rerun()
                found = divergence(forward(), clean, weights)
                noise.ascend(torch.autograd.grad(found, noise.deltas, allow_unused=True, materialize_grads=True))
            noise.rerun()
            perturbed = forward()
        return self.weight * divergence(perturbed, outputs, weights)


def divergence(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    return sum(weights[t] * TASKS[t].divergence(a[t], b[t]) for t in a)
