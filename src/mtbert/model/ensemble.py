"""Several trained multitask models used as one: each head's output is the mean of the members' outputs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mtbert.model.multitask import MultitaskModel


class Ensemble(nn.Module):
    """Members trained on the same tasks, with the same tokenizer (and tag vocabulary, if tagged). The output of a
    task is the mean of the members' raw head outputs: SST's five logits, Quora's logit, STS's score; an ensemble
    of one model is that model. It reads batches as MultitaskModel.forward does, so evaluation, prediction, the
    predictor and the server take either."""

    def __init__(self, members: list[MultitaskModel]):
        super().__init__()
        first = members[0]
        for k, m in enumerate(members[1:], start=2):
            if list(m.heads) != list(first.heads):
                raise ValueError(f"model {k} has the tasks {', '.join(m.heads)}, model 1 {', '.join(first.heads)}")
            if m.tag_vocab != first.tag_vocab:
                raise ValueError(f"model {k} and model 1 differ in their tags (--additional_input)")
        self.members = nn.ModuleList(members)

    @property
    def heads(self) -> nn.ModuleDict:
        """The tasks, as the members' heads (those of the first member)."""
        return self.members[0].heads

    @property
    def tags(self) -> nn.Module | None:
        return self.members[0].tags

    @property
    def tag_vocab(self) -> dict | None:
        return self.members[0].tag_vocab

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def sequences_per_row(self, task: str) -> float:
        """The members' mean (each counts its share of the progress, see forward)."""
        return sum(m.sequences_per_row(task) for m in self.members) / len(self.members)

    def forward(
        self,
        batch: dict[str, list[list[list[int]]]],
        tags: dict | None = None,
        done: Callable[[int], object] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Task -> the members' mean head output (see MultitaskModel.forward); `done` counts every member's share."""
        k = len(self.members)
        each = None if done is None else (lambda n: done(n / k))
        outputs = [m(batch, tags, each) for m in self.members]
        return {t: torch.stack([o[t].float() for o in outputs]).mean(0) for t in outputs[0]}
