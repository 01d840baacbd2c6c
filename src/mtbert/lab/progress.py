"""The search's Ray Tune callback, imported by mtbert.lab.hpo once Ray is."""

from __future__ import annotations

import logging
from pathlib import Path

from ray.tune import Callback

log = logging.getLogger("mtbert.lab.hpo")


class Progress(Callback):
    """One line per finished trial (Ray's own output is off)."""

    def __init__(self, trials: int, epochs: int, folder: str, metric: str):
        self.trials, self.epochs, self.folder, self.metric = trials, epochs, folder, metric  # folder: of the trials

    def finished(self, trials: list, trial) -> int:
        return sum(t is trial or t.status in ("TERMINATED", "ERROR") for t in trials)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result, best = trial.last_result or {}, trial.metric_analysis.get(self.metric, {}).get("max")
        epochs = int(result.get("training_iteration", 0))
        early = ", stopped early" if epochs < self.epochs else ""
        score = f"best mean dev score {best:.3f}" if best is not None else "no score"
        log.info(
            "trial %s done (%d/%d): %s, %d of %d epochs%s",
            trial.trial_id,
            self.finished(trials, trial),
            self.trials,
            score,
            epochs,
            self.epochs,
            early,
        )

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        log.warning(
            "trial %s failed (%d/%d): see %s",
            trial.trial_id,
            self.finished(trials, trial),
            self.trials,
            Path(self.folder, trial.trial_id, "train.log"),
        )
