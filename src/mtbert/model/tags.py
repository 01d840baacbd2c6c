"""POS and NER tag embeddings (--additional_input), added to BERT's input embeddings."""

from __future__ import annotations

import torch
from torch import nn

# A sentence's tag ids (--additional_input): POS and NER, one of each per word piece.
Tags = tuple[list[int], list[int]]


class TagEmbeddings(nn.Module):
    """Two learned tables of the hidden size, one for POS tags and one for entity tags. Both start at zero, so that a
    pretrained encoder starts exactly unchanged; id 0 is padding."""

    def __init__(self, n_pos: int, n_ner: int, hidden_size: int):
        super().__init__()
        self.pos = nn.Embedding(n_pos, hidden_size)
        self.ner = nn.Embedding(n_ner, hidden_size)
        nn.init.zeros_(self.pos.weight)
        nn.init.zeros_(self.ner.weight)

    def forward(self, pos: torch.Tensor, ner: torch.Tensor) -> torch.Tensor:
        """(B, T) tag ids each -> (B, T, H), the encoder's extra input embeddings."""
        return self.pos(pos) + self.ner(ner)
