"""The multitask model: one shared encoder and attention pooling, composed with one head per task."""

from __future__ import annotations

import torch
from torch import nn

from mtbert.encoder import BertEncoder
from mtbert.heads import AttentionPooling
from mtbert.tasks import TASKS

# Sentences of a step are sorted by length and encoded in chunks of at most this many (padded) tokens, so that
# short sentences are not padded to the longest one of the step. Small chunks suit a CPU; a GPU, whose time goes
# to launching kernels rather than to padding, wants few large passes.
CHUNK_TOKENS = {"cpu": 1024, "cuda": 16384}


class MultitaskModel(nn.Module):
    def __init__(self, encoder: BertEncoder, tasks: tuple[str, ...], dropout: float, pad_id: int = 0):
        super().__init__()
        self.encoder = encoder
        encoder.pooler.requires_grad_(False)  # BERT's [CLS] pooler: the tasks pool with attention instead
        self.pool = AttentionPooling(encoder.config.hidden_size)
        self.heads = nn.ModuleDict({t: TASKS[t].make_head(encoder.config.hidden_size, dropout) for t in tasks})
        self.pad_id = pad_id
        self.chunk_tokens: int | None = None  # None: CHUNK_TOKENS of the device the model is on

    @property
    def device(self) -> torch.device:
        return self.pool.proj.weight.device

    def embed(self, sentences: list[list[int]]) -> torch.Tensor:
        """Sentence embeddings (N, H) of token-id lists, encoded in length-sorted chunks; output in input order."""
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        budget = self.chunk_tokens or CHUNK_TOKENS.get(self.device.type, CHUNK_TOKENS["cpu"])
        chunks, start = [], 0
        while start < len(order):
            end = start + 1
            # grow the chunk while (sequences x longest length) stays within the token budget
            while end < len(order) and (end - start + 1) * len(sentences[order[end]]) <= budget:
                end += 1
            chunks.append(order[start:end])
            start = end
        pooled = []
        for chunk in chunks:
            hidden, mask = self.encoder.encode_padded([sentences[i] for i in chunk], self.pad_id)  # (b, T, H), (b, T)
            pooled.append(self.pool(hidden, mask))  # (b, H)
        out = torch.cat(pooled)  # (N, H) in sorted order
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return out[inverse.to(out.device)]

    def forward(self, batch: dict[str, list[list[list[int]]]]) -> dict[str, torch.Tensor]:
        """batch: task -> one list of token-id lists per text column. Returns task -> head output.

        All sentences of all tasks go through the encoder in one pass, then each head reads its own.
        """
        sentences = [s for columns in batch.values() for column in columns for s in column]
        emb = self.embed(sentences)
        outputs, at = {}, 0
        for task, columns in batch.items():
            parts = []
            for column in columns:
                parts.append(emb[at : at + len(column)])
                at += len(column)
            outputs[task] = self.heads[task](*parts)
        return outputs
