"""The BERT encoder: embeddings, post-LN transformer layers and pooler, on padded batches (B, T, H)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Hugging Face `hidden_act` names -> the `approximate` argument of F.gelu.
_GELU = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in _GELU:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (use one of {sorted(_GELU)})")

    @classmethod
    def from_hf_dict(cls, raw: dict) -> EncoderConfig:
        """Keeps the fields we use from a Hugging Face `config.json`; the rest (architectures, ...) is ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


class Embeddings(nn.Module):
    """Word + position + token type embeddings (+ optional extra input embeddings), then LayerNorm and dropout."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        extra: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids, token_type_ids: (B, T) -> (B, T, H). `extra` (B, T, H) is added like the other embeddings
        (e.g. POS/NER tag embeddings); `position_ids` default to 0 .. T-1."""
        if position_ids is None:  # a slice of the table, (T, H): no lookup, forward or backward
            positions = self.position.weight[: input_ids.shape[-1]]
        else:
            positions = self.position(position_ids)
        x = self.word(input_ids) + positions + self.token_type(token_type_ids)  # (B, T, H)
        if extra is not None:
            x = x + extra
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention: softmax(Q K^T / sqrt(D)) V per head, then an output projection."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        H = cfg.hidden_size
        self.n_heads = cfg.num_attention_heads
        self.q = nn.Linear(H, H)
        self.k = nn.Linear(H, H)
        self.v = nn.Linear(H, H)
        self.out = nn.Linear(H, H)
        self.dropout_p = cfg.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, T, H); mask: (B, 1, 1, T), True where a key is a real token, or None (no padding)."""
        return self.out(self.attend(self.qkv(x), mask))

    def qkv(self, x: torch.Tensor) -> torch.Tensor:
        """Q, K and V side by side, from one matrix product: (..., H) -> (..., 3H)."""
        weight = torch.cat((self.q.weight, self.k.weight, self.v.weight))  # (3H, H)
        return F.linear(x, weight, torch.cat((self.q.bias, self.k.bias, self.v.bias)))

    def attend(self, qkv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, 3H) and the key mask (B, 1, 1, T) -> (B, T, H)."""
        B, T, H3 = qkv.shape
        D = H3 // 3 // self.n_heads
        q, k, v = qkv.view(B, T, 3, self.n_heads, D).permute(2, 0, 3, 1, 4)  # each (B, nh, T, D)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )  # (B, nh, T, D)
        return y.transpose(1, 2).reshape(B, T, H3 // 3)


class FeedForward(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.approximate = _GELU[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x), approximate=self.approximate))  # (..., H) -> (..., I) -> (..., H)


class Layer(nn.Module):
    """Post-LN transformer layer, as in the original BERT: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attn(x, mask)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class BertEncoder(nn.Module):
    """A BERT encoder. `forward` returns the last hidden states (B, T, H); `pooler_output` is BERT's [CLS] pooler.
    Load a Hugging Face checkpoint with `mtbert.model.hf.load_encoder`."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.emb = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.checkpointing = False  # recompute each layer's activations in backward instead of keeping them
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # BERT's initialisation; loaded checkpoints overwrite it.
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        extra_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids, attention_mask, token_type_ids: (B, T); extra_embeddings: (B, T, H). Returns (B, T, H).

        Without padding, pass no mask: SDPA then picks its fastest kernel (checking the mask here would make the
        host wait for the GPU)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask.bool()[:, None, None, :] if attention_mask is not None else None  # (B, 1, 1, T)
        x = self.emb(input_ids, token_type_ids, extra_embeddings)  # (B, T, H)
        for layer in self.layers:
            if self.checkpointing and torch.is_grad_enabled():  # the same numbers (and dropout masks), less memory
                x = checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
        return x

    def pooler_output(self, hidden: torch.Tensor) -> torch.Tensor:
        """BERT's pooler: tanh(W h_[CLS]). (B, T, H) -> (B, H)."""
        return torch.tanh(self.pooler(hidden[:, 0]))
