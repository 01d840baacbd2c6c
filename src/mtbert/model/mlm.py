"""BERT's masked-language-model head: transform (dense, GELU, LayerNorm), then a decoder tied to the word embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtbert.model.encoder import _GELU, BertEncoder

# Hugging Face BertForMaskedLM's names of the head's weights -> ours; its decoder weight is the word embeddings.
HF_HEAD_KEYS = {
    "cls.predictions.transform.dense.weight": "dense.weight",
    "cls.predictions.transform.dense.bias": "dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "norm.bias",
    "cls.predictions.bias": "bias",
}


class MaskedLMHead(nn.Module):
    """logits = W_word . LN(gelu(W h + b)) + bias over the vocabulary, for the hidden states of masked tokens."""

    def __init__(self, encoder: BertEncoder):
        super().__init__()
        cfg = encoder.config
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.approximate = _GELU[cfg.hidden_act]
        self.word = encoder.emb.word  # tied: the decoder is the word embedding matrix (not a copy)
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, H) -> (N, V)."""
        x = self.norm(F.gelu(self.dense(hidden), approximate=self.approximate))
        return F.linear(x, self.word.weight, self.bias)

    def head_state(self) -> dict[str, torch.Tensor]:
        """The head's own weights under Hugging Face's names (the tied decoder left out)."""
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("word.")}
        return {hf: own[ours].detach().contiguous().cpu() for hf, ours in HF_HEAD_KEYS.items()}

    def load_hf(self, hf_state: dict[str, torch.Tensor]) -> bool:
        """Takes the head's weights from a Hugging Face state dict where it has them all; returns whether it did."""
        if not all(k in hf_state for k in HF_HEAD_KEYS):
            return False
        own = {ours: hf_state[hf].float() for hf, ours in HF_HEAD_KEYS.items()}
        self.load_state_dict(own | {"word.weight": self.word.weight.detach()}, strict=True)
        return True
