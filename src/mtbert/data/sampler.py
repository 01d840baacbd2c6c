"""Multitask batching: which rows of every task each training step takes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class MultitaskSampler:
    """Draws each epoch's examples: `samples_per_epoch` per task, random and without replacement within the epoch
    (a task smaller than that is cycled through in fresh permutations). Step i takes batch i of every task.

    With `synthetic_ratio` R, a task with generated rows (`synthetic`: a bool mask per task) draws at most
    floor(R * samples_per_epoch) of them per epoch, without replacement, and the rest from its original rows (cycled
    through as above); its batches mix both in a random order. Without it, generated rows are rows like any other."""

    def __init__(
        self,
        sizes: dict[str, int],
        samples_per_epoch: int,
        batch_size: int,
        seed: int,
        synthetic: dict[str, np.ndarray] | None = None,
        synthetic_ratio: float | None = None,
    ):
        self.sizes = sizes
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self.seed = seed
        self.synthetic = synthetic or {}
        self.synthetic_ratio = synthetic_ratio

    def __len__(self) -> int:
        return -(-self.samples_per_epoch // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """Yields {task: row indices} for every step of `epoch`; the same (seed, epoch) gives the same draw."""
        rng = np.random.default_rng([self.seed, epoch])
        draws = {}
        for task, n in self.sizes.items():
            mask = self.synthetic.get(task)
            if self.synthetic_ratio is None or mask is None or not mask.any():
                draws[task] = cycle(rng, np.arange(n), self.samples_per_epoch)
                continue
            generated, original = np.flatnonzero(mask), np.flatnonzero(~mask)
            if not len(original):  # only generated rows: nothing to cap them against
                draws[task] = cycle(rng, generated, self.samples_per_epoch)
                continue
            k = min(int(self.synthetic_ratio * self.samples_per_epoch), len(generated))
            drawn = np.concatenate([rng.permutation(generated)[:k], cycle(rng, original, self.samples_per_epoch - k)])
            draws[task] = rng.permutation(drawn)
        for start in range(0, self.samples_per_epoch, self.batch_size):
            yield {task: d[start : start + self.batch_size] for task, d in draws.items()}


def cycle(rng: np.random.Generator, rows: np.ndarray, count: int) -> np.ndarray:
    """`count` of `rows` in fresh random permutations, one after another (without replacement within each)."""
    if count == 0:
        return rows[:0]
    perms = [rows[rng.permutation(len(rows))] for _ in range(-(-count // len(rows)))]
    return np.concatenate(perms)[:count]
