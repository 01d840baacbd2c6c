"""The multitask model: one shared encoder and attention pooling, composed with one head per task."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn
from tqdm import tqdm

from mtbert.model.encoder import BertEncoder
from mtbert.model.heads import AttentionPooling
from mtbert.model.tasks import TASKS
from mtbert.model.tokenizer import pad_batch

# A batch's sentences are sorted by length and encoded in passes of at most this many (padded) tokens, so that short
# sentences are not padded to the longest one of the batch. Small passes suit a CPU; a GPU, whose time goes to
# launching kernels rather than to padding, wants few large passes.
CHUNK_TOKENS = {"cpu": 1024, "cuda": 16384}


class EncoderPasses(Protocol):
    """How a batch's sentences go through the encoder: PaddedPasses, or the GPU's passes of mtbert.accel."""

    def plan(self, model: MultitaskModel, lengths: list[int]) -> list[list[int]]:
        """The sentence indices of each pass."""
        ...

    def encode(self, model: MultitaskModel, seqs: list[list[int]]) -> torch.Tensor:
        """The pooled embeddings (b, H) of one pass's token-id lists."""
        ...


class PaddedPasses:
    """Sentences sorted by length, cut into passes of at most `chunk_tokens` padded tokens (None: CHUNK_TOKENS of
    the model's device), each pass padded to its longest sentence."""

    def __init__(self, chunk_tokens: int | None = None):
        self.chunk_tokens = chunk_tokens

    def plan(self, model: MultitaskModel, lengths: list[int]) -> list[list[int]]:
        budget = self.chunk_tokens or CHUNK_TOKENS.get(model.device.type, CHUNK_TOKENS["cpu"])
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        passes, start = [], 0
        while start < len(order):  # grow a pass while (its sentences x its longest length) fits the budget
            end = start + 1
            while end < len(order) and (end - start + 1) * lengths[order[end]] <= budget:
                end += 1
            passes.append(order[start:end])
            start = end
        return passes

    def encode(self, model: MultitaskModel, seqs: list[list[int]]) -> torch.Tensor:
        ids, mask = pad_batch(seqs, model.pad_id)  # (b, T) each, on the host
        padded = not bool(mask.all())  # decided on the host: no mask for a pass without padding
        ids, mask = ids.to(model.device, non_blocking=True), mask.to(model.device, non_blocking=True)
        hidden = model.encoder(ids, mask if padded else None)  # (b, T, H)
        return model.pool(hidden, mask)  # (b, H)


class MultitaskModel(nn.Module):
    def __init__(self, encoder: BertEncoder, tasks: tuple[str, ...], dropout: float, pad_id: int = 0):
        super().__init__()
        self.encoder = encoder
        encoder.pooler.requires_grad_(False)  # BERT's [CLS] pooler: the tasks pool with attention instead
        self.pool = AttentionPooling(encoder.config.hidden_size)
        self.heads = nn.ModuleDict({t: TASKS[t].make_head(encoder.config.hidden_size, dropout) for t in tasks})
        self.pad_id = pad_id
        self.passes: EncoderPasses = PaddedPasses()

    @property
    def device(self) -> torch.device:
        return self.pool.proj.weight.device

    def embed(self, sentences: list[list[int]], progress: bool = False) -> torch.Tensor:
        """Sentence embeddings (N, H) of token-id lists, encoded pass by pass (see self.passes), in input order.
        `progress`: a progress bar of the sentences encoded, on stderr if it is a terminal (removed when done)."""
        passes = self.passes.plan(self, [len(s) for s in sentences])
        pooled = []
        with tqdm(
            total=len(sentences), desc="encoding", unit="sentence", disable=None if progress else True, leave=False
        ) as bar:
            for rows in passes:
                pooled.append(self.passes.encode(self, [sentences[i] for i in rows]))  # (b, H)
                bar.update(len(rows))
        out = torch.cat(pooled)  # (N, H) in pass order
        order = torch.tensor([i for rows in passes for i in rows])
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[order] = torch.arange(len(order))
        return out[inverse.to(out.device)]

    def forward(self, batch: dict[str, list[list[list[int]]]], progress: bool = False) -> dict[str, torch.Tensor]:
        """batch: task -> one list of token-id lists per text column. Returns task -> head output.

        All sentences of all tasks go through the shared encoder together, then each head reads its own.
        """
        return self.apply_heads(self.embed(batch_sentences(batch), progress), batch_sizes(batch))

    def apply_heads(self, emb: torch.Tensor, sizes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
        """Task -> head output, from the embeddings (N, H) of a batch's sentences in order: task by task, text
        column by column, `sizes` the number of sentences of each column (see batch_sizes)."""
        outputs, at = {}, 0
        for task, columns in sizes.items():
            parts = []
            for n in columns:
                parts.append(emb[at : at + n])
                at += n
            outputs[task] = self.heads[task](*parts)
        return outputs


def batch_sentences(batch: dict[str, list[list[list[int]]]]) -> list[list[int]]:
    """The token-id lists of a batch's sentences in order: task by task, text column by column."""
    return [s for columns in batch.values() for column in columns for s in column]


def batch_sizes(batch: dict[str, list[list[list[int]]]]) -> dict[str, list[int]]:
    """Task -> the number of sentences in each text column of a batch."""
    return {task: [len(column) for column in columns] for task, columns in batch.items()}
