"""WordPiece tokenization (Hugging Face `tokenizers`) of single sentences and sentence pairs."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from tokenizers import BertWordPieceTokenizer

from mtbert.errors import MtbertError
from mtbert.model.hf import default_checkpoint


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

    def token_id(self, token: str) -> int:
        """The id of a special token ("[MASK]", "[CLS]", ...); an MtbertError if the vocabulary lacks it."""
        found = self._tok.token_to_id(token)
        if found is None:
            raise MtbertError(f"{self.vocab_file}: the vocabulary has no {token} token")
        return found

    def same_as(self, other: Tokenizer) -> bool:
        """Whether `other` turns every text into the same token ids (its vocabulary and settings are this one's)."""
        same_vocab = self.vocab_file.read_bytes() == other.vocab_file.read_bytes()
        return same_vocab and (self.lowercase, self.max_length) == (other.lowercase, other.max_length)

    def set_max_length(self, max_length: int) -> None:
        """Truncates later encodings to `max_length` word pieces, [CLS] and [SEP] included."""
        self.max_length = max_length
        self._tok.enable_truncation(max_length)

    def encode_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each sentence, with [CLS] and [SEP], unpadded."""
        return [e.ids for e in self._tok.encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        """The text of word-piece ids (special tokens left out, `##` pieces joined to their word)."""
        return self._tok.decode(ids, skip_special_tokens=True)

    def encode_offsets(self, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        """Token ids of each sentence (as encode_ids) and each token's (start, end) characters in the sentence;
        [CLS] and [SEP] have (0, 0)."""
        encodings = self._tok.encode_batch(texts)
        return [e.ids for e in encodings], [e.offsets for e in encodings]

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


def _read_json(file: Path) -> dict:
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MtbertError(f"{file}: not valid JSON ({e})") from e
