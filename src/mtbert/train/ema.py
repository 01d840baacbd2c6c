"""--ema BETA: an exponential moving average of the weights, evaluated and saved in place of the raw weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightAverage:
    """The running average avg <- b * avg + (1 - b) * weight of every floating-point tensor of a model's state,
    updated after each optimizer step (Polyak & Juditsky, 1992). It starts at the model's weights, and the factor
    warms up as TensorFlow's ExponentialMovingAverage does, b = min(beta, (1 + n) / (10 + n)) at the n-th update, so
    that a short run's average is not held at the initial weights."""

    def __init__(self, model: nn.Module, beta: float):
        self.beta = beta
        self.updates = 0
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def factor(self) -> float:
        return min(self.beta, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        b = self.factor()
        for key, value in model.state_dict().items():
            if key in self.average:
                self.average[key].lerp_(value, 1.0 - b)  # avg + (1 - b) * (value - avg)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model with the averaged weights in place of its own, which are put back on leaving."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.average}
        model.load_state_dict(self.average, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(raw, strict=False)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "average": dict(self.average)}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        for key, value in state["average"].items():
            self.average[key].copy_(value)
