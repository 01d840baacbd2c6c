"""Multitask batching: which rows of every task each training step takes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

SAMPLING = ("equal", "proportional", "sqrt", "annealed")


def task_shares(sizes: dict[str, int], sampling: str, epoch: int = 0, epochs: int = 1) -> dict[str, float]:
    """Each task's share of an epoch's examples (Stickland & Murray, 2019): equal; proportional to its training rows
    N; to sqrt(N); or annealed, N^a with a = 1 - 0.8 * epoch / (epochs - 1), from proportional at the first epoch to
    nearly equal at the last."""
    if sampling == "equal":
        return {t: 1 / len(sizes) for t in sizes}
    if sampling == "annealed":
        power = 1 - 0.8 * epoch / (epochs - 1) if epochs > 1 else 1.0
    else:
        power = {"proportional": 1.0, "sqrt": 0.5}[sampling]
    mass = {t: n**power for t, n in sizes.items()}
    return {t: m / sum(mass.values()) for t, m in mass.items()}


class MultitaskSampler:
    """Draws each epoch's examples: `samples_per_epoch` per task, random and without replacement within the epoch
    (a task smaller than that is cycled through in fresh permutations). Step i takes batch i of every task.

    With `synthetic_ratio` R, a task with generated rows (`synthetic`: a bool mask per task) draws at most
    floor(R * samples_per_epoch) of them per epoch, without replacement, and the rest from its original rows (cycled
    through as above); its batches mix both in a random order. Without it, generated rows are rows like any other.

    With `sampling` other than "equal" (see task_shares), an epoch still has len(self) steps and all tasks'
    samples_per_epoch * tasks examples, but task t draws its share s_t of them, spread evenly over the steps; its
    mean loss then counts s_t * tasks times (`loss_scales`), so that every example weighs the same in a step."""

    def __init__(
        self,
        sizes: dict[str, int],
        samples_per_epoch: int,
        batch_size: int,
        seed: int,
        synthetic: dict[str, np.ndarray] | None = None,
        synthetic_ratio: float | None = None,
        sampling: str = "equal",
        epochs: int = 1,
    ):
        self.sizes = sizes
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self.seed = seed
        self.synthetic = synthetic or {}
        self.synthetic_ratio = synthetic_ratio
        self.sampling = sampling
        self.epochs = epochs

    def counts(self, epoch: int) -> dict[str, int]:
        """Each task's examples in `epoch`: samples_per_epoch (equal), else its share of all, at least one a step."""
        if self.sampling == "equal":
            return {t: self.samples_per_epoch for t in self.sizes}
        shares = task_shares(self.sizes, self.sampling, epoch, self.epochs)
        total = self.samples_per_epoch * len(self.sizes)
        return {t: max(len(self), round(s * total)) for t, s in shares.items()}

    def loss_scales(self, epoch: int) -> dict[str, float]:
        """The factor of each task's mean loss in `epoch`: its examples per step against an equal draw's (1 when
        equal)."""
        return {t: n / self.samples_per_epoch for t, n in self.counts(epoch).items()}

    def __len__(self) -> int:
        return -(-self.samples_per_epoch // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """Yields {task: row indices} for every step of `epoch`; the same (seed, epoch) gives the same draw."""
        rng = np.random.default_rng([self.seed, epoch])
        draws = {}
        for (task, n), count in zip(self.sizes.items(), self.counts(epoch).values(), strict=True):
            mask = self.synthetic.get(task)
            if self.synthetic_ratio is None or mask is None or not mask.any():
                draws[task] = cycle(rng, np.arange(n), count)
                continue
            generated, original = np.flatnonzero(mask), np.flatnonzero(~mask)
            if not len(original):  # only generated rows: nothing to cap them against
                draws[task] = cycle(rng, generated, count)
                continue
            k = min(int(self.synthetic_ratio * count), len(generated))
            drawn = np.concatenate([rng.permutation(generated)[:k], cycle(rng, original, count - k)])
            draws[task] = rng.permutation(drawn)
        if self.sampling != "equal":  # each task's draw in len(self) batches of (nearly) equal size
            parts = {task: np.array_split(d, len(self)) for task, d in draws.items()}
            for i in range(len(self)):
                yield {task: p[i] for task, p in parts.items()}
            return
        for start in range(0, self.samples_per_epoch, self.batch_size):
            yield {task: d[start : start + self.batch_size] for task, d in draws.items()}


def cycle(rng: np.random.Generator, rows: np.ndarray, count: int) -> np.ndarray:
    """`count` of `rows` in fresh random permutations, one after another (without replacement within each)."""
    if count == 0:
        return rows[:0]
    perms = [rows[rng.permutation(len(rows))] for _ in range(-(-count // len(rows)))]
    return np.concatenate(perms)[:count]
