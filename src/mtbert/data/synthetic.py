"""Generated SST sentences as data: the filters they pass before training, and their file (ids-sst-train layout).

A generated row's first (index) column reads `synthetic`, as in the original project's ids-sst-train-syn.csv, so
that training tells it from the originals (`--synthetic_ratio`); its id is `synthetic-N`.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mtbert.data.files import SYNTHETIC
from mtbert.model.tasks import SENTIMENT_NAMES
from mtbert.outputs import atomic_write_bytes

Row = tuple[str, int]  # (sentence, label 0..4)
LABEL_WORDS = SENTIMENT_NAMES  # the control prefix of each label: its name
FILTERS = ("length", "exact duplicate", "near duplicate", "in dev/test")


def normalise(text: str) -> str:
    """The text as the near-duplicate and leakage checks compare it: lower case, accents and apostrophes dropped,
    other punctuation a space, spaces collapsed ("The film's brand-new!" and "the films brand new" are the same)."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"['`\u2019]", "", text)
    return " ".join(re.sub(r"[^\w\s]|_", " ", text).split())


def clean(text: str) -> str:
    """One line of text: tabs, line ends and runs of spaces become one space."""
    return " ".join(text.split())


@dataclass
class Filtered:
    kept: list[Row]
    removed: dict[str, int] = field(default_factory=dict)  # filter -> rows it removed


def filter_rows(rows: list[Row], originals: list[str], held_out: list[str], min_words: int, max_words: int) -> Filtered:
    """The generated rows that pass every filter, in order, and how many each filter removed (each row counts for the
    first filter it fails): a length of `min_words` to `max_words` words; not the same text as an original training
    sentence or an earlier generated one (exact), nor the same normalised text (near); not a sentence of the dev or
    test files after normalising (`held_out`: leakage into evaluation)."""
    exact = {clean(s) for s in originals}
    near = {normalise(s) for s in originals}
    leaked = {normalise(s) for s in held_out}
    removed = Counter({name: 0 for name in FILTERS})
    kept: list[Row] = []
    for text, label in rows:
        text = clean(text)
        key = normalise(text)
        if not min_words <= len(text.split()) <= max_words:
            removed["length"] += 1
        elif text in exact:
            removed["exact duplicate"] += 1
        elif key in near:
            removed["near duplicate"] += 1
        elif key in leaked:
            removed["in dev/test"] += 1
        else:
            kept.append((text, label))
        exact.add(text)
        near.add(key)
    return Filtered(kept, dict(removed))


def write_rows(path: Path, rows: list[Row]) -> None:
    """Writes generated rows as an SST training file (atomically: a crash leaves the previous file, or none)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(["", "id", "sentence", "sentiment"])
    for n, (text, label) in enumerate(rows):
        writer.writerow([SYNTHETIC, f"{SYNTHETIC}-{n}", clean(text), label])
    atomic_write_bytes(path, out.getvalue().encode("utf-8"))
