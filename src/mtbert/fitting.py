"""mtbert.fit(cfg): training from Python in one call, with the speed modes the config asks for."""

from __future__ import annotations

from collections.abc import Callable

from mtbert.accel.modes import speed_for
from mtbert.config import Config
from mtbert.train.loop import train


def fit(cfg: Config, report: Callable[[dict[str, float]], None] | None = None) -> dict[str, float]:
    """Trains the multitask model as `cfg` says (see mtbert.train.loop.train) with the GPU speed modes that its
    --unpad, --torch_compile and --graph_steps ask for; returns the dev metrics of the best epoch."""
    return train(cfg, report=report, speed=speed_for(cfg))
