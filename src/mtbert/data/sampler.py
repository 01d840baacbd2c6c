"""Multitask batching: which rows of every task each training step takes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class MultitaskSampler:
    """Draws each epoch's examples: `samples_per_epoch` per task, random and without replacement within the epoch
    (a task smaller than that is cycled through in fresh permutations). Step i takes batch i of every task."""

    def __init__(self, sizes: dict[str, int], samples_per_epoch: int, batch_size: int, seed: int):
        self.sizes = sizes
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self.seed = seed

    def __len__(self) -> int:
        return -(-self.samples_per_epoch // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """Yields {task: row indices} for every step of `epoch`; the same (seed, epoch) gives the same draw."""
        rng = np.random.default_rng([self.seed, epoch])
        draws = {}
        for task, n in self.sizes.items():
            perms = [rng.permutation(n) for _ in range(-(-self.samples_per_epoch // n))]
            draws[task] = np.concatenate(perms)[: self.samples_per_epoch]
        for start in range(0, self.samples_per_epoch, self.batch_size):
            yield {task: d[start : start + self.batch_size] for task, d in draws.items()}
