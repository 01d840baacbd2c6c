"""A mixture of expert encoders: K BERT encoders and a gating encoder whose [CLS] pooler output gives each sentence
a distribution over the experts. The heads (and the attention pooling) stay shared."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from mtbert.model.encoder import BertEncoder, EncoderConfig

GATES = ("soft", "hard")
Pool = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # hidden (b, T, H), mask (b, T) -> (b, H)


class MixtureOfEncoders(nn.Module):
    """`experts` encoders and a gating encoder. `gate` "soft": a sentence's embedding is the gate-weighted sum of
    every expert's; "hard": its top expert's alone, and only that expert encodes it.

    A hard gate's choice (argmax) has no gradient. The chosen expert's embedding is multiplied by p / p.detach()
    (p: the gate's weight of that expert), which is 1 in the forward pass, so the heads see the expert's embedding
    unchanged (its scale does not depend on how sure the gate is), while the gate receives the gradient that
    scaling by p would give it, divided by p: straight-through. Scaling by p itself (Switch Transformer) would
    shrink embeddings by about K at the start, where the gate is near uniform.

    While training, the sentences routed to each expert (their top-weighted one, for either gate) and the summed
    gate weights are counted, for the loop to log (`take_routing`). With `balance` > 0 (--moe_balance) a step's
    routing also gives the load-balancing loss of the Switch Transformer (`balance_loss`), which the step adds."""

    def __init__(self, encoders: list[BertEncoder], gate_encoder: BertEncoder, gate: str = "soft"):
        super().__init__()
        if len(encoders) < 2:
            raise ValueError(f"a mixture needs at least 2 experts, got {len(encoders)}")
        self.experts = nn.ModuleList(encoders)
        self.gate_encoder = gate_encoder
        self.gate = nn.Linear(gate_encoder.config.hidden_size, len(encoders))
        nn.init.normal_(self.gate.weight, std=0.02)  # near-uniform weights at the start
        nn.init.zeros_(self.gate.bias)
        self.gate_mode = gate
        self.routed: torch.Tensor | None = None  # (2, K): top-1 counts and summed weights, while training
        self.balance = 0.0  # the weight of the load-balancing loss (--moe_balance)
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # this step's (top-1 counts, summed weights)

    @classmethod
    def from_encoder(cls, encoder: BertEncoder, experts: int, gate: str = "soft") -> MixtureOfEncoders:
        """Every expert and the gating encoder start as copies of `encoder`."""
        return cls([copy.deepcopy(encoder) for _ in range(experts)], copy.deepcopy(encoder), gate)

    @classmethod
    def empty(cls, cfg: EncoderConfig, experts: int, gate: str = "soft") -> MixtureOfEncoders:
        """A mixture of randomly initialised encoders of `cfg` (for loading saved weights into)."""
        return cls([BertEncoder(cfg) for _ in range(experts)], BertEncoder(cfg), gate)

    @property
    def config(self) -> EncoderConfig:
        return self.gate_encoder.config

    @property
    def gate_mode(self) -> str:
        return self._gate_mode

    @gate_mode.setter
    def gate_mode(self, gate: str) -> None:
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
        self._gate_mode = gate

    def encoders(self) -> list[BertEncoder]:
        return [*self.experts, self.gate_encoder]

    def weights(self, ids: torch.Tensor, mask: torch.Tensor | None, extra: torch.Tensor | None) -> torch.Tensor:
        """The gate's distribution over the experts (b, K) of each sentence."""
        hidden = self.gate_encoder(ids, mask, extra_embeddings=extra)  # (b, T, H)
        return torch.softmax(self.gate(self.gate_encoder.pooler_output(hidden)).float(), dim=-1)

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor, padded: bool, extra: torch.Tensor | None, pool: Pool
    ) -> torch.Tensor:
        """ids, mask: (b, T) (mask True at real tokens; `padded`: whether any is False); extra: (b, T, H) input
        embeddings to add, or None. `pool` turns an expert's hidden states into sentence embeddings. -> (b, H)."""
        attn_mask = mask if padded else None
        p = self.weights(ids, attn_mask, extra)  # (b, K)
        top = p.argmax(dim=-1)  # (b,)
        if self.training:
            counts = torch.bincount(top, minlength=p.shape[1]).float()  # (K,) sentences per top expert
            self.count(counts, p)
            if self.balance and torch.is_grad_enabled():
                self.pending.append((counts, p.sum(0)))
        if self.gate_mode == "soft":
            out = 0
            for k, expert in enumerate(self.experts):
                emb = pool(expert(ids, attn_mask, extra_embeddings=extra), mask)  # (b, H)
                out = out + p[:, k, None].to(emb.dtype) * emb
            return out
        parts, order = [], []
        for k, expert in enumerate(self.experts):
            rows = (top == k).nonzero().squeeze(1)  # this expert's sentences
            if len(rows) == 0:
                continue
            sub_extra = extra[rows] if extra is not None else None
            sub_mask = attn_mask[rows] if attn_mask is not None else None
            emb = pool(expert(ids[rows], sub_mask, extra_embeddings=sub_extra), mask[rows])  # (b_k, H)
            chosen = p[rows, k, None]
            parts.append(emb * (chosen / chosen.detach()).to(emb.dtype))  # 1 forward, the gate's gradient backward
            order.append(rows)
        out = torch.cat(parts)
        inverse = torch.empty_like(top)
        inverse[torch.cat(order)] = torch.arange(len(top), device=top.device)
        return out[inverse]

    @torch.no_grad()
    def count(self, counts: torch.Tensor, p: torch.Tensor) -> None:
        routed = torch.stack((counts, p.sum(0)))  # (2, K)
        self.routed = routed if self.routed is None else self.routed + routed

    def take_routing(self) -> torch.Tensor | None:
        """(2, K) since the last call: the sentences routed to each expert, and the summed gate weights; then reset."""
        routed, self.routed = self.routed, None
        return routed

    def balance_loss(self) -> torch.Tensor:
        """The load-balancing loss of this step's sentences, K * sum_k f_k * P_k (Fedus et al., 2021): f_k the share
        routed to expert k (their top one), P_k its mean gate weight. 1 when routing is even, up to K when one expert
        takes all; its gradient (through P) lowers the weight of the experts that receive more than their share.
        Forgets the step's routing."""
        counts = torch.stack([c for c, _ in self.pending]).sum(0)  # (K,)
        weights = torch.stack([w for _, w in self.pending]).sum(0)  # (K,), with the gate's graph
        self.pending = []
        n = counts.sum()
        return len(counts) * ((counts / n) * (weights / n)).sum()
