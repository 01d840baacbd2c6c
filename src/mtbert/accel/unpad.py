"""Unpadded encoding (--unpad): the encoder's modules run on a pass's real tokens alone, a (N, H) matrix, and only
attention places them back among padding, in the padded pass or in groups of sentences of similar length."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from mtbert.model.encoder import BertEncoder, SelfAttention


class AttentionGroups(NamedTuple):
    """Where the tokens of an unpadded pass attend (see attention_groups)."""

    slots: torch.Tensor  # (N,) each encoded token's place among the groups' slots
    mask: torch.Tensor  # (S,) True at the slots of real tokens; S = the sum of rows x length over the groups
    shapes: tuple[tuple[int, int], ...]  # (rows, length) of each group, in slot order


def token_index(mask: np.ndarray, multiple: int = 1) -> torch.Tensor:
    """The positions of the real tokens in a flattened (B, T) attention mask, ascending (N,). With `multiple` > 1,
    padding positions join them as fillers until N is a multiple of it (or all B * T positions), so that N takes
    few values (for CUDA graphs, recorded per shape)."""
    flat = mask.reshape(-1).astype(bool)
    real = np.flatnonzero(flat)
    n = min(-(-len(real) // multiple) * multiple, flat.size)
    if n > len(real):
        real = np.sort(np.concatenate([real, np.flatnonzero(~flat)[: n - len(real)]]))
    return torch.from_numpy(real)


def attention_groups(
    mask: np.ndarray, shares: tuple[float, ...], length_multiple: int = 1, multiple: int = 1
) -> tuple[torch.Tensor, AttentionGroups]:
    """Sorts the sentences of a padded pass (its mask (B, T)) by length into groups of the given shares of its rows,
    each padded to its own longest sentence (rounded up to a multiple of `length_multiple`, at most T), so that
    attention need not pad every sentence to the pass's longest: its T x T scores per sentence fall to the group's.
    The tokens to encode are the real ones and, as in token_index, fillers from the groups' padding up to a
    `multiple`. Returns their positions in the (B, T) pass (N,) and their places in the groups."""
    B, T = mask.shape
    lengths = mask.sum(1)  # (B,): right-padded rows
    order = np.argsort(lengths, kind="stable")
    bounds = np.round(np.cumsum((0.0, *shares)) / sum(shares) * B).astype(int)
    rows, positions, shapes = [], [], []  # per slot: its row of the pass and its position
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        if end > start:
            group = order[start:end]
            length = min(-(-int(lengths[group].max()) // length_multiple) * length_multiple, T)
            shapes.append((len(group), length))
            rows.append(np.repeat(group, length))
            positions.append(np.tile(np.arange(length), len(group)))
    rows, positions = np.concatenate(rows), np.concatenate(positions)  # (S,) each
    real = positions < lengths[rows]  # (S,)
    slots = token_index(real, multiple).numpy()  # (N,) real slots, then fillers
    tokens = rows[slots] * T + positions[slots]  # (N,) their positions in the flattened (B, T) pass
    return torch.from_numpy(tokens), AttentionGroups(torch.from_numpy(slots), torch.from_numpy(real), tuple(shapes))


def scatter_rows(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """(N, C) -> (n, C): the rows of x at their places `index` (N,), zeros elsewhere."""
    return x.new_zeros(n, x.shape[-1]).index_copy(0, index, x)


def encode_unpadded(
    encoder: BertEncoder,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tokens: torch.Tensor,
    groups: AttentionGroups | None = None,
    token_type_ids: torch.Tensor | None = None,
    extra_embeddings: torch.Tensor | None = None,
) -> torch.Tensor:
    """BertEncoder.forward on the tokens at `tokens` (N,) of the flattened (B, T) batch alone: the same states at
    those positions (B, T, H), zeros elsewhere. Embeddings, linear layers, norms and dropout see N tokens; attention
    sees them in the padded batch, or with `groups` in groups of sentences each padded to its own length."""
    B, T = input_ids.shape
    if groups is None:  # the tokens attend in their places of the padded batch: one group of all its rows
        groups = AttentionGroups(tokens, attention_mask.bool().flatten(), ((B, T),))
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)

    def take(t: torch.Tensor) -> torch.Tensor:  # (B, T, ...) -> (N, ...)
        return t.flatten(0, 1).index_select(0, tokens)

    extra = take(extra_embeddings) if extra_embeddings is not None else None
    x = encoder.emb(take(input_ids), take(token_type_ids), extra, position_ids=tokens % T)  # (N, H)
    for layer in encoder.layers:  # Layer.forward, with attention in groups
        x = layer.attn_norm(x + layer.dropout(grouped_attention(layer.attn, x, groups)))
        x = layer.ffn_norm(x + layer.dropout(layer.ffn(x)))
    return scatter_rows(x, tokens, B * T).view(B, T, -1)


def grouped_attention(attn: SelfAttention, x: torch.Tensor, groups: AttentionGroups) -> torch.Tensor:
    """SelfAttention.forward of unpadded tokens (N, H): each group of sentences attends in its own (rows, length)
    slots, padded and masked there."""
    sizes = [rows * length for rows, length in groups.shapes]
    parts = scatter_rows(attn.qkv(x), groups.slots, sum(sizes)).split(sizes)  # each (rows * length, 3H)
    ys = [
        attn.attend(part.view(rows, length, -1), key_mask.view(rows, 1, 1, length)).flatten(0, 1)
        for (rows, length), part, key_mask in zip(groups.shapes, parts, groups.mask.split(sizes), strict=True)
    ]
    y = ys[0] if len(ys) == 1 else torch.cat(ys)  # (S, H)
    return attn.out(y.index_select(0, groups.slots))  # (N, H)
