"""The learning-rate schedules: what each sets the learning rates to, step by step, and over a whole run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mtbert.config import Config
from mtbert.fitting import fit
from mtbert.train.checkpoint import load_training_state
from mtbert.train.schedule import build_scheduler


def two_groups() -> torch.optim.Optimizer:
    """An optimizer of two parameter groups at other learning rates, as the encoder's and the heads'."""
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    return torch.optim.AdamW([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 2e-4}])


def test_cosine_decays_every_group_to_zero_over_the_steps() -> None:
    optimizer = two_groups()
    scheduler = build_scheduler("cosine", optimizer, total_steps=10)
    for step in range(13):  # past the end it stays at 0
        factor = 0.5 * (1 + math.cos(math.pi * min(step, 10) / 10))
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3 * factor, 2e-4 * factor], abs=1e-12)
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_plateau_halves_only_after_an_epoch_without_a_better_score() -> None:
    optimizer = two_groups()
    scheduler = build_scheduler("plateau", optimizer, total_steps=10)
    lrs = []
    for score in (0.5, 0.6, 0.6, 0.7, 0.65, 0.64):
        scheduler.step(score)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 1.25e-4])
    assert build_scheduler("none", optimizer, total_steps=10) is None


def test_a_cosine_run_ends_at_lr_zero_after_epochs_x_steps(cfg: Config, tmp_path: Path) -> None:
    run = cfg.updated(scheduler="cosine", epochs=3, resume=str(tmp_path / "state"))
    fit(run)
    saved = load_training_state(tmp_path / "state")
    steps = saved["scheduler"]["last_epoch"]  # LambdaLR counts steps as epochs
    assert steps == 3 * 1  # toy data: samples_per_epoch 8 at batch 8, one step an epoch
    groups = saved["optimizer"]["param_groups"]
    assert {g["initial_lr"] for g in groups} >= {3e-3} and all(g["lr"] == pytest.approx(0, abs=1e-12) for g in groups)
