"""Gradual unfreezing (--unfreeze_interval N): the heads, the pooling and the top encoder layer train from the start;
every N epochs the next layer down joins, the embeddings (and tag embeddings) last.

The optimizer is built over every parameter that will train. A frozen one has no gradient, which AdamW and Sophia
skip (no update, no weight decay, no state), so a joining parameter starts its moments afresh while those already
training keep theirs, and the lr schedule runs on."""

from __future__ import annotations

from torch import nn

from mtbert.model.multitask import MultitaskModel


class Unfreezing:
    """The unfreezing schedule of `model` with `interval` epochs between joins."""

    def __init__(self, model: MultitaskModel, interval: int):
        if interval < 1:
            raise ValueError(f"the unfreezing interval must be at least 1, got {interval}")
        self.interval = interval
        encoders = model.encoders()  # a mixture's experts and gate join layer by layer together
        n = model.config.num_hidden_layers
        top_down = [(f"layer {i + 1}", [e.layers[i] for e in encoders]) for i in reversed(range(n))]
        embeddings = [e.emb for e in encoders] + ([model.tags] if model.tags is not None else [])
        self.blocks: list[tuple[str, list[nn.Module]]] = [*top_down, ("embeddings", embeddings)]

    def join_epoch(self, block: int) -> int:
        """The epoch (from 0) at which block `block` (0: the top layer) starts training."""
        return block * self.interval

    def joining(self, epoch: int) -> list[str]:
        """The blocks that start training at `epoch` (from 0)."""
        return [name for b, (name, _) in enumerate(self.blocks) if self.join_epoch(b) == epoch]

    def schedule(self, epochs: int) -> dict[str, int | None]:
        """Block -> the epoch (from 1, as logged) at which it joins, None if not within `epochs`."""
        return {
            name: self.join_epoch(b) + 1 if self.join_epoch(b) < epochs else None
            for b, (name, _) in enumerate(self.blocks)
        }

    def set_epoch(self, epoch: int) -> bool:
        """Makes the blocks trainable that have joined by `epoch` (from 0), the others frozen; returns whether that
        changed which parameters train."""
        changed = False
        for b, (_, modules) in enumerate(self.blocks):
            train = self.join_epoch(b) <= epoch
            for p in (p for m in modules for p in m.parameters()):
                changed |= p.requires_grad != train
                p.requires_grad_(train)
        return changed
