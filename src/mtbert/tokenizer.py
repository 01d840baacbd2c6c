"""WordPiece tokenization (Hugging Face `tokenizers`) of single sentences and sentence pairs."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tokenizers import BertWordPieceTokenizer

from mtbert.errors import MtbertError


class Tokenizer:
    """BERT's WordPiece tokenizer built from a checkpoint's `vocab.txt`.

    Single sentences become `[CLS] a [SEP]`, pairs `[CLS] a [SEP] b [SEP]` with token type ids 0 then 1.
    """

    def __init__(self, vocab_file: str | Path, lowercase: bool = True, max_length: int = 512):
        self.vocab_file = Path(vocab_file)
        self.lowercase = lowercase
        try:
            self._tok = BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase)
        except Exception as e:  # the Rust reader raises plain Exceptions on a bad vocabulary
            raise MtbertError(f"{vocab_file}: cannot read the WordPiece vocabulary ({e})") from e
        self.set_max_length(max_length)
        self.pad_id = self._tok.token_to_id("[PAD]")
        if self.pad_id is None:
            raise MtbertError(f"{vocab_file}: the vocabulary has no [PAD] token")

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> Tokenizer:
        """Reads `vocab.txt` and the lower-casing/length settings of a checkpoint folder (None: packaged MiniLM)."""
        from mtbert.encoder import default_checkpoint

        folder = Path(path) if path is not None else default_checkpoint()
        vocab = folder / "vocab.txt"
        if not vocab.is_file():
            raise MtbertError(f"{vocab}: missing; the checkpoint folder needs its WordPiece vocabulary")
        settings = _read_json(folder / "tokenizer_config.json")
        max_length = min(
            settings.get("model_max_length", 512),
            _read_json(folder / "config.json").get("max_position_embeddings", 512),
            # sentence-transformers checkpoints truncate shorter than the model could read
            _read_json(folder / "sentence_bert_config.json").get("max_seq_length", 512),
        )
        return cls(vocab, lowercase=settings.get("do_lower_case", True), max_length=max_length)

    def save(self, folder: Path) -> None:
        """Writes `vocab.txt` and `tokenizer_config.json` so that `from_pretrained(folder)` rebuilds this tokenizer."""
        shutil.copyfile(self.vocab_file, folder / "vocab.txt")
        settings = {"do_lower_case": self.lowercase, "model_max_length": self.max_length}
        (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")

    def set_max_length(self, max_length: int) -> None:
        """Truncates later encodings to `max_length` word pieces, [CLS] and [SEP] included."""
        self.max_length = max_length
        self._tok.enable_truncation(max_length)

    def encode_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each sentence, with [CLS] and [SEP], unpadded."""
        return [e.ids for e in self._tok.encode_batch(texts)]

    def __call__(self, texts: list[str], pairs: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Encodes sentences (or sentence pairs) and pads them to the longest: ids, mask and types, all (B, T)."""
        inputs = texts if pairs is None else list(zip(texts, pairs, strict=True))
        encodings = self._tok.encode_batch(inputs)
        ids, mask = pad_batch([e.ids for e in encodings], self.pad_id)
        types, _ = pad_batch([e.type_ids for e in encodings], 0)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def pad_batch(seqs: list[list[int]], pad_id: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pads token id lists to the longest (or to `length`): returns input_ids and attention_mask, both (B, T)."""
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))  # (B,)
    mask = np.arange(length or lengths.max()) < lengths[:, None]  # (B, T), row-major like the concatenated ids
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    ids[mask] = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))


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


class AttentionGroups(NamedTuple):
    """Where the tokens of an unpadded pass attend when its sentences attend in groups (see attention_groups)."""

    slots: torch.Tensor  # (N,) each encoded token's place among the groups' slots
    mask: torch.Tensor  # (S,) True at the slots of real tokens; S = the sum of rows x length over the groups
    shapes: tuple[tuple[int, int], ...]  # (rows, length) of each group, in slot order


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


class PassInputs(NamedTuple):
    """One encoder pass as built on the host (see pass_inputs)."""

    ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T)
    padded: bool  # whether the encoder gets the mask
    tokens: torch.Tensor | None  # (N,) the positions encoded unpadded (see token_index), or None: the whole pass
    groups: AttentionGroups | None = None  # unpadded: where the tokens attend, if not in the (B, T) pass

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the pass, in a fixed order."""
        groups = [self.groups.slots, self.groups.mask] if self.groups is not None else []
        return [t for t in (self.ids, self.mask, self.tokens, *groups) if t is not None]

    def to(self, device: torch.device | str) -> PassInputs:
        """The tensors on `device` (copies that do not wait for the device; none if already there)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.to(device, non_blocking=True) if t is not None else None

        groups = self.groups
        if groups is not None:
            groups = AttentionGroups(move(groups.slots), move(groups.mask), groups.shapes)
        return PassInputs(move(self.ids), move(self.mask), self.padded, move(self.tokens), groups)


def pass_inputs(
    seqs: list[list[int]], pad_id: int, length: int | None = None, unpad: bool = False, multiple: int = 1
) -> PassInputs:
    """Pads a pass's token-id lists to the longest (or to `length`) and decides on the host, so that nothing waits
    for the GPU, whether the encoder needs the mask: when the lengths differ, and always for a given `length`, so
    that a compiled encoder sees one kind of input. `unpad`: a padded pass lists the positions to encode, their
    count rounded up to a `multiple` (see token_index)."""
    ids, mask = pad_batch(seqs, pad_id, length)
    padded = length is not None or not mask.numpy().all()
    tokens = token_index(mask.numpy(), multiple) if unpad and padded else None
    return PassInputs(ids, mask, padded, tokens)


def _read_json(file: Path) -> dict:
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MtbertError(f"{file}: not valid JSON ({e})") from e
