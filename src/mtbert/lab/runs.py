"""Runs that lab tools start (search trials, ablation runs): each in its own folder, with its own history."""

from __future__ import annotations

import json
from pathlib import Path

from mtbert.config import Config


def run_config(base: Config, changes: dict, folder: Path) -> Config:
    """A run of `base` with `changes`, everything it writes in `folder`: model/, runs/ (TensorBoard), predictions/
    and state/ (its --resume state, so that a stopped run continues where it was)."""
    settings = base.settings()
    outputs = {
        name: str(folder / "predictions" / Path(settings[name]).name) for name in settings if name.endswith("_out")
    }
    where = {"save_dir": str(folder / "model"), "logdir": str(folder / "runs"), "resume": str(folder / "state")}
    return base.updated(**changes, **outputs, **where, tensorboard_subfolder=None)


def saved_settings(path: Path, described: dict) -> dict | None:
    """What an earlier run of a lab command saved at `path`, for a rerun to compare with; on the first run None,
    and `described` is saved there."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(described, indent=2) + "\n", encoding="utf-8")
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def read_history(folder: Path) -> list[dict]:
    """The dev metrics of each epoch a run in `folder` has finished (history.jsonl, an epoch a line)."""
    path = folder / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_history(folder: Path, metrics: dict) -> None:
    with open(folder / "history.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(metrics) + "\n")
