"""The multitask model: one shared encoder and attention pooling, composed with one head per task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from mtbert.model.auto import AutoEncoder, FamilyConfig
from mtbert.model.encoder import BertEncoder, EncoderConfig
from mtbert.model.heads import AttentionPooling, CrossPairHead
from mtbert.model.moe import MixtureOfEncoders
from mtbert.model.tags import TagEmbeddings, Tags
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

    def encode(self, model: MultitaskModel, seqs: list[list[int]], tags: list[Tags] | None) -> torch.Tensor:
        """The pooled embeddings (b, H) of one pass's token-id lists (and their tag ids, for a tagged model)."""
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

    def encode(self, model: MultitaskModel, seqs: list[list[int]], tags: list[Tags] | None = None) -> torch.Tensor:
        ids, mask = pad_batch(seqs, model.pad_id)  # (b, T) each, on the host
        padded = not bool(mask.all())  # decided on the host: no mask for a pass without padding
        ids, mask = ids.to(model.device, non_blocking=True), mask.to(model.device, non_blocking=True)
        extra = model.tag_embeddings(tags) if tags is not None else None  # (b, T, H)
        return model.sentence_embeddings(ids, mask, padded, extra)  # (b, H)


class MultitaskModel(nn.Module):
    """One shared encoder (or a mixture of expert encoders, `moe`), attention pooling, a head per task; with
    `tag_vocab` (--additional_input) also POS and NER tag embeddings, added to the encoder's input embeddings.

    `pair_encoding` "bi" encodes each sentence of a pair on its own and the head compares the two embeddings;
    "cross" encodes a pair as one sequence [CLS] a [SEP] b [SEP] (b's token type 1, told by the [SEP] `sep_id`
    before it) and the head reads the pair's pooled state."""

    def __init__(
        self,
        encoder: BertEncoder | AutoEncoder | MixtureOfEncoders,
        tasks: tuple[str, ...],
        dropout: float,
        pad_id: int = 0,
        tag_vocab: dict | None = None,
        pair_encoding: str = "bi",
        sep_id: int | None = None,
    ):
        super().__init__()
        self.moe: MixtureOfEncoders | None = encoder if isinstance(encoder, MixtureOfEncoders) else None
        self.encoder: BertEncoder | AutoEncoder | None = encoder if self.moe is None else None
        for enc in self.encoders():  # BERT's [CLS] pooler: the tasks pool with attention instead (a gate uses its own)
            if self.moe is None or enc is not self.moe.gate_encoder:
                enc.pooler.requires_grad_(False)
        self.pair_encoding, self.sep_id = pair_encoding, sep_id
        self.any_cross = any(map(self.cross_encoded, tasks))  # then token types tell a joined pair's parts apart
        if self.any_cross and (sep_id is None or self.moe is not None or tag_vocab is not None):
            raise ValueError("cross-encoded pairs need the [SEP] id, and work with one encoder without tags")
        self.pool = AttentionPooling(encoder.config.hidden_size)
        self.heads = nn.ModuleDict({t: self.make_head(t, encoder.config.hidden_size, dropout) for t in tasks})
        self.pad_id = pad_id
        self.passes: EncoderPasses = PaddedPasses()
        self.source: dict | None = None  # {"model", "revision"}: the hub model the encoder was downloaded from
        self.tag_vocab: dict | None = None  # {"tagger", "pos", "ner"}: the tag names, saved with the model
        self.tags: TagEmbeddings | None = None
        if tag_vocab is not None:
            self.add_tags(tag_vocab)

    def cross_encoded(self, task: str) -> bool:
        """Whether `task`'s pairs are encoded as one sequence: --pair_encoding cross, or a declared `cross` head."""
        spec = TASKS[task]
        return spec.pair and (self.pair_encoding == "cross" or spec.cross)

    def make_head(self, task: str, hidden_size: int, dropout: float) -> nn.Module:
        if self.cross_encoded(task):
            return CrossPairHead(hidden_size, dropout, TASKS[task].outputs)
        return TASKS[task].make_head(hidden_size, dropout)

    def sequences_per_row(self, task: str) -> float:
        """How many sequences the encoder reads for one row of `task`: its text columns, or 1 for a cross-encoded
        pair."""
        return 1 if self.cross_encoded(task) else len(TASKS[task].text_columns)

    def add_tags(self, tag_vocab: dict) -> None:
        """Adds the tag embeddings of `tag_vocab`'s POS and NER tags, zero at first (the model's outputs unchanged)."""
        self.tag_vocab = tag_vocab
        hidden = self.config.hidden_size
        self.tags = TagEmbeddings(len(tag_vocab["pos"]), len(tag_vocab["ner"]), hidden).to(self.device)

    @property
    def device(self) -> torch.device:
        return self.pool.proj.weight.device

    @property
    def config(self) -> EncoderConfig | FamilyConfig:
        """The encoder's configuration (every expert's, for a mixture)."""
        return self.encoder.config if self.encoder is not None else self.moe.config

    def encoders(self) -> list[BertEncoder | AutoEncoder]:
        """The encoder, or a mixture's experts and its gating encoder."""
        return [self.encoder] if self.encoder is not None else self.moe.encoders()

    def sentence_embeddings(
        self, ids: torch.Tensor, mask: torch.Tensor, padded: bool, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The pooled embeddings (b, H) of a padded pass: ids, mask (b, T), `padded` whether the mask has a False
        (else the encoder gets no mask); `extra` (b, T, H) added to the input embeddings."""
        if self.moe is not None:
            return self.moe(ids, mask, padded, extra, self.pool)
        types = segments(ids, self.sep_id) if self.any_cross else None  # (b, T)
        hidden = self.encoder(ids, mask if padded else None, types, extra_embeddings=extra)  # (b, T, H)
        return self.pool(hidden, mask)

    def tag_embeddings(self, tags: list[Tags]) -> torch.Tensor:
        """The tag embeddings (b, T, H) of a pass's sentences, padded as their token ids."""
        pos, _ = pad_batch([p for p, _ in tags], 0)
        ner, _ = pad_batch([n for _, n in tags], 0)
        return self.tags(pos.to(self.device, non_blocking=True), ner.to(self.device, non_blocking=True))

    def embed(
        self, sentences: list[list[int]], tags: list[Tags] | None = None, done: Callable[[int], object] | None = None
    ) -> torch.Tensor:
        """Sentence embeddings (N, H) of token-id lists, encoded pass by pass (see self.passes), in input order.
        `tags`: each sentence's tag ids, for a tagged model. `done`: called with each pass's number of sentences
        (a caller's progress bar)."""
        passes = self.passes.plan(self, [len(s) for s in sentences])
        pooled = []
        for rows in passes:
            pass_tags = [tags[i] for i in rows] if tags is not None else None
            pooled.append(self.passes.encode(self, [sentences[i] for i in rows], pass_tags))  # (b, H)
            if done is not None:
                done(len(rows))
        out = torch.cat(pooled)  # (N, H) in pass order
        order = torch.tensor([i for rows in passes for i in rows])
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[order] = torch.arange(len(order))
        return out[inverse.to(out.device)]

    def forward(
        self,
        batch: dict[str, list[list[list[int]]]],
        tags: dict | None = None,
        done: Callable[[int], object] | None = None,
    ) -> dict[str, torch.Tensor]:
        """batch: task -> one list of token-id lists per text column (tags: the same of tag ids, for a tagged
        model; `done`: see embed). Returns task -> head output.

        All sentences of all tasks go through the shared encoder together, then each head reads its own.
        """
        if (tags is not None) != (self.tags is not None):
            raise ValueError("a tagged model needs the sentences' tags, an untagged one none")
        limit = self.config.max_position_embeddings  # a cross-encoded pair's two columns become one of joined ones
        batch = {t: [join_pairs(*cols, limit)] if self.cross_encoded(t) else cols for t, cols in batch.items()}
        sentence_tags = batch_sentences(tags) if tags is not None else None
        return self.apply_heads(self.embed(batch_sentences(batch), sentence_tags, done), batch_sizes(batch))

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


def batch_sentences(batch: dict[str, list[list]]) -> list:
    """The token-id lists (or tags) of a batch's sentences in order: task by task, text column by column."""
    return [s for columns in batch.values() for column in columns for s in column]


def batch_sizes(batch: dict[str, list[list[list[int]]]]) -> dict[str, list[int]]:
    """Task -> the number of sentences in each text column of a batch."""
    return {task: [len(column) for column in columns] for task, columns in batch.items()}


def join_pairs(first: list[list[int]], second: list[list[int]], limit: int) -> list[list[int]]:
    """Each pair's token ids [CLS] a [SEP] and [CLS] b [SEP] as one sequence [CLS] a [SEP] b [SEP], the longer
    part's last word pieces cut while the whole is longer than `limit`."""
    joined = []
    for a, b in zip(first, second, strict=True):
        sep, head, tail = a[-1], a[:-1], b[1:-1]  # [SEP]; [CLS] a; b
        while len(head) + len(tail) + 2 > limit:
            head, tail = (head[:-1], tail) if len(head) > len(tail) else (head, tail[:-1])
        joined.append([*head, sep, *tail, sep])
    return joined


def segments(ids: torch.Tensor, sep_id: int) -> torch.Tensor:
    """BERT's token types (b, T) of joined pairs: 0 up to the first [SEP] (itself included), 1 after it."""
    seps = (ids == sep_id).long()
    return ((seps.cumsum(-1) - seps) > 0).long()
