"""The original project's task heads, on top of an attention-pooled sentence embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttentionPooling(nn.Module):
    """Learned weights over the token states: w = softmax(v . tanh(W h_t)) over real tokens, output sum_t w_t h_t.

    `v` starts at zero, so pooling starts as the mean over tokens that all-MiniLM-L6-v2 was trained with.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)
        nn.init.zeros_(self.score.weight)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H), (B, T) -> (B, H)."""
        scores = self.score(torch.tanh(self.proj(hidden))).squeeze(-1)  # (B, T)
        scores = scores.masked_fill(mask == 0, float("-inf"))
        weights = scores.softmax(dim=-1).to(hidden.dtype)  # (B, T)
        return torch.einsum("bt,bth->bh", weights, hidden)


def mlp(n_in: int, n_hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    """The heads' MLP: dropout, linear, ReLU, dropout, linear."""
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(n_hidden, n_out)
    )


class SentimentHead(nn.Module):
    """A small MLP from one sentence embedding to the 5 SST logits."""

    def __init__(self, hidden_size: int, dropout: float, num_classes: int = 5):
        super().__init__()
        self.mlp = mlp(hidden_size, hidden_size, num_classes, dropout)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.mlp(u)  # (B, 5)


def squeezed(out: torch.Tensor) -> torch.Tensor:
    """A head's output (B, K), or (B,) for a head of one output (a binary logit, a score)."""
    return out.squeeze(-1) if out.shape[-1] == 1 else out


class SentenceHead(nn.Module):
    """A declared single-sentence task's head: the MLP from the sentence embedding to its K outputs."""

    def __init__(self, hidden_size: int, dropout: float, n_out: int):
        super().__init__()
        self.mlp = mlp(hidden_size, hidden_size, n_out, dropout)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return squeezed(self.mlp(u))  # (B, K) or (B,)


class ConcatPairHead(nn.Module):
    """A declared pair task's `mlp` head: an MLP over [u, v, |u - v|] (Sentence-BERT's classifier)."""

    def __init__(self, hidden_size: int, dropout: float, n_out: int):
        super().__init__()
        self.mlp = mlp(3 * hidden_size, hidden_size, n_out, dropout)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return squeezed(self.mlp(torch.cat([u, v, (u - v).abs()], dim=-1)))


class ParaphraseHead(nn.Module):
    """Projects each sentence, then an MLP over [|u - v|, |u + v|] to one paraphrase logit (symmetric in u, v); a
    declared task's `pair` head has `n_out` outputs."""

    def __init__(self, hidden_size: int, dropout: float, n_out: int = 1):
        super().__init__()
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.mlp = mlp(2 * hidden_size, hidden_size, n_out, dropout)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        u, v = self.proj(a), self.proj(b)  # (B, H) each
        return squeezed(self.mlp(torch.cat([(u - v).abs(), (u + v).abs()], dim=-1)))  # (B,)


class SimilarityHead(nn.Module):
    """Cosine similarity of the two sentence embeddings on the scale [low, high]: low + (high - low) cos, for STS
    5 cos, the 0-5 scale for non-negative cosines.

    Trained with MSE against the 0-5 gold score, as sentence-transformers' CosineSimilarityLoss does (label / 5).
    It has no parameters: the shared encoder and pooling learn the similarity.
    """

    def __init__(self, low: float = 0.0, high: float = 5.0):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.low + (self.high - self.low) * F.cosine_similarity(a, b, dim=-1)  # (B,)


class CrossPairHead(nn.Module):
    """A sentence pair encoded together ([CLS] a [SEP] b [SEP], --pair_encoding cross): an MLP from the pair's
    pooled state to one number, Quora's paraphrase logit or STS's score (a declared task: its `n_out` outputs)."""

    def __init__(self, hidden_size: int, dropout: float, n_out: int = 1):
        super().__init__()
        self.mlp = mlp(hidden_size, hidden_size, n_out, dropout)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return squeezed(self.mlp(pair))  # (B,)
