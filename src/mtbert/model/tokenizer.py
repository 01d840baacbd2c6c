"""Tokenization (Hugging Face `tokenizers`) of single sentences and sentence pairs."""

from __future__ import annotations

import atexit
import itertools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from tokenizers import BertWordPieceTokenizer
from tokenizers import Tokenizer as RustTokenizer

from mtbert.errors import MtbertError
from mtbert.model.hf import default_checkpoint

# BERT's names of the special tokens mtbert asks for; another family's are read from its tokenizer settings.
SPECIAL_TOKENS = {"[CLS]": "cls_token", "[SEP]": "sep_token", "[PAD]": "pad_token", "[MASK]": "mask_token"}


class Tokenizer:
    """A checkpoint's tokenizer: BERT's WordPiece built from `vocab.txt`, or any family's fast tokenizer file
    `tokenizer.json` (RoBERTa's BPE, DeBERTa-v3's Unigram, ...) with its special tokens.

    Single sentences become `[CLS] a [SEP]`, pairs `[CLS] a [SEP] b [SEP]` with token type ids 0 then 1 (in the
    family's own special tokens: `<s> a </s>` for RoBERTa).
    """

    def __init__(
        self,
        vocab_file: str | Path,
        lowercase: bool = True,
        max_length: int = 512,
        specials: dict[str, str] | None = None,
    ):
        self.vocab_file = Path(vocab_file)
        self.lowercase = lowercase
        self.specials = {**{name: name for name in SPECIAL_TOKENS}, **(specials or {})}  # BERT's name -> the token
        try:
            if self.vocab_file.suffix == ".json":
                self._tok = RustTokenizer.from_file(str(vocab_file))
            else:
                self._tok = BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase)
        except Exception as e:  # the Rust reader raises plain Exceptions on a bad vocabulary
            raise MtbertError(f"{vocab_file}: cannot read the tokenizer ({e})") from e
        self.set_max_length(max_length)
        self.pad_id = self.token_id("[PAD]")

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> Tokenizer:
        """Reads `vocab.txt` (else `tokenizer.json`) and the lower-casing, length and special-token settings of a
        checkpoint folder (None: packaged MiniLM)."""
        folder = Path(path) if path is not None else default_checkpoint()
        vocab, fast, found = folder / "vocab.txt", folder / "tokenizer.json", {}
        if not vocab.is_file() and not fast.is_file():
            fast, found = converted(folder)
        settings = _read_json(folder / "tokenizer_config.json")
        max_length = min(
            settings.get("model_max_length", 512),
            _read_json(folder / "config.json").get("max_position_embeddings", 512),
            # sentence-transformers checkpoints truncate shorter than the model could read
            _read_json(folder / "sentence_bert_config.json").get("max_seq_length", 512),
        )
        if vocab.is_file():
            return cls(vocab, lowercase=settings.get("do_lower_case", True), max_length=max_length)
        named = {**_read_json(folder / "special_tokens_map.json"), **settings}
        specials = {bert: _content(named[key]) for bert, key in SPECIAL_TOKENS.items() if named.get(key)} | found
        return cls(fast, max_length=max_length, specials=specials)

    def save(self, folder: Path) -> None:
        """Writes the vocabulary (`vocab.txt` or `tokenizer.json`) and `tokenizer_config.json` so that
        `from_pretrained(folder)` rebuilds this tokenizer (and transformers' AutoTokenizer loads it)."""
        if self.vocab_file.suffix == ".json":
            shutil.copyfile(self.vocab_file, folder / "tokenizer.json")
            tokens = {key: self.specials[bert] for bert, key in SPECIAL_TOKENS.items()}
            settings = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": self.max_length, **tokens}
        else:
            shutil.copyfile(self.vocab_file, folder / "vocab.txt")
            settings = {"do_lower_case": self.lowercase, "model_max_length": self.max_length}
        (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")

    def token_id(self, token: str) -> int:
        """The id of a special token by BERT's name ("[MASK]", "[CLS]", ...: the family's own token for another
        tokenizer); an MtbertError if the vocabulary lacks it."""
        found = self._tok.token_to_id(self.specials.get(token, token))
        if found is None:
            raise MtbertError(f"{self.vocab_file}: the vocabulary has no {self.specials.get(token, token)} token")
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


# The files of tokenizers that transformers converts to a tokenizer.json: BPE (RoBERTa, GPT-2 style), SentencePiece
# (DeBERTa-v3, XLM-R, ALBERT).
CONVERTIBLE = ("vocab.json", "merges.txt", "spm.model", "sentencepiece.bpe.model", "spiece.model")


def converted(folder: Path) -> tuple[Path, dict[str, str]]:
    """A checkpoint's tokenizer without a tokenizer.json, converted by transformers into one (in a temporary
    folder removed when the process ends; a saved model keeps the file), and its special tokens."""
    if not any((folder / name).is_file() for name in CONVERTIBLE):
        raise MtbertError(f"{folder}: no vocab.txt or tokenizer.json; the checkpoint folder needs its tokenizer")
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(folder, use_fast=True)
        backend = hf.backend_tokenizer
    except Exception as e:  # ImportError, a missing converter dependency (sentencepiece), a damaged file
        raise MtbertError(
            f"{folder}: has no tokenizer.json, and transformers could not convert its tokenizer ({type(e).__name__}: "
            f"{e}); save one with `AutoTokenizer.from_pretrained(...).save_pretrained(folder)` where it can"
        ) from e
    tmp = tempfile.mkdtemp(prefix="mtbert-tokenizer-")
    atexit.register(shutil.rmtree, tmp, True)
    backend.save(str(Path(tmp) / "tokenizer.json"))
    specials = {bert: str(getattr(hf, key)) for bert, key in SPECIAL_TOKENS.items() if getattr(hf, key, None)}
    return Path(tmp) / "tokenizer.json", specials


def _content(token: str | dict) -> str:
    """A special token as tokenizer settings write it: the token, or {"content": token, ...}."""
    return token["content"] if isinstance(token, dict) else token
