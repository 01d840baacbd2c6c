"""BERT's masking of word pieces for masked-language-model training."""

from __future__ import annotations

import torch

IGNORE = -100  # the label of a token the loss skips (F.cross_entropy's ignore_index)


def mask_tokens(
    ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    prob: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chooses each maskable token (`maskable`, (B, T) bool: not [CLS], [SEP] or padding) with probability `prob`;
    of those, 80% become [MASK], 10% a random word piece, 10% stay. Returns the inputs and the labels (the original
    id where chosen, IGNORE elsewhere), both (B, T)."""
    chosen = (torch.rand(ids.shape, generator=generator) < prob) & maskable
    labels = torch.where(chosen, ids, IGNORE)
    roll = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator)
    inputs = torch.where(chosen & (roll < 0.8), mask_id, ids)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels
