"""The CS224N CSV files: reading and validating them, and writing prediction files in the original format."""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtbert.errors import MtbertError
from mtbert.outputs import atomic_write_bytes, readable_file

log = logging.getLogger(__name__)


SYNTHETIC = "synthetic"  # the index column (the first, unnamed one) of a generated row reads this


@dataclass
class Examples:
    """Rows of one CSV file (or of several, merged): ids, the text columns (one list per column), labels (None for
    unlabelled files), and which rows are generated ones (their index column reads `synthetic`)."""

    path: Path
    ids: list[str]
    texts: list[list[str]]  # texts[c][i]: column c of row i
    labels: np.ndarray | None
    synthetic: np.ndarray | None = None  # bool per row; None: read before it was known (all original)

    def __len__(self) -> int:
        return len(self.ids)

    def is_synthetic(self) -> np.ndarray:
        return self.synthetic if self.synthetic is not None else np.zeros(len(self), dtype=bool)

    def take(self, index: np.ndarray | list[int]) -> Examples:
        """The rows at `index`, in that order."""
        labels = self.labels[index] if self.labels is not None else None
        texts = [[column[i] for i in index] for column in self.texts]
        return Examples(self.path, [self.ids[i] for i in index], texts, labels, self.is_synthetic()[index])


def read_examples(
    path: str | Path,
    text_columns: tuple[str, ...],
    label_column: str,
    parse_label: Callable[[str], float],
    require_labels: bool,
) -> Examples:
    """Reads a tab-separated CS224N file (first column an unnamed index, then `id`, texts, and maybe a label).

    Rows with an empty label are skipped with one warning that counts them. A malformed file raises MtbertError
    naming the file and line. `parse_label` raises ValueError with a short reason for a bad label.
    """
    path = Path(path)
    if path.is_dir():
        raise MtbertError(f"{path}: is a folder, expected a CSV file")
    if not path.is_file():
        raise MtbertError(f"{path}: no such file (fetch the data with `mtbert data fetch`, or check --data_dir)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark, as some editors write, is dropped
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise MtbertError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x})") from e
    csv.field_size_limit(sys.maxsize)  # a long sentence is still one field
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    header = next(reader, None)
    if header is None:
        raise MtbertError(f"{path}: the file is empty; expected a header with id, {', '.join(text_columns)}")
    header = [h.strip() for h in header]
    has_label = label_column in header
    if require_labels and not has_label:
        raise MtbertError(f"{path}:1: missing column {label_column!r} (header: {', '.join(h for h in header if h)})")
    for col in ("id", *text_columns):
        if col not in header:
            raise MtbertError(f"{path}:1: missing column {col!r} (header: {', '.join(h for h in header if h)})")
    id_at, text_at = header.index("id"), [header.index(c) for c in text_columns]
    label_at = header.index(label_column) if has_label else None

    ids: list[str] = []
    texts: list[list[str]] = [[] for _ in text_columns]
    labels: list[float] = []
    synthetic: list[bool] = []
    skipped = 0
    for line, row in rows_with_lines(reader, path):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header) - (0 if has_label else 1):
            raise MtbertError(f"{path}:{line}: {len(row)} fields, expected {len(header)}")
        if label_at is not None:
            cell = row[label_at].strip() if label_at < len(row) else ""
            if not cell:
                skipped += 1
                continue
            try:
                labels.append(parse_label(cell))
            except ValueError as e:
                raise MtbertError(f"{path}:{line}: {label_column} {cell!r}: {e}") from e
        ids.append(row[id_at].strip())
        synthetic.append(id_at > 0 and row[0].strip() == SYNTHETIC)
        for c, at in enumerate(text_at):
            texts[c].append(row[at].strip())
    if skipped:
        log.warning("%s: skipped %d row(s) without a %s label", path, skipped, label_column)
    if not ids:
        raise MtbertError(f"{path}: no data rows after the header")
    labels_array = np.asarray(labels, dtype=np.float32) if has_label else None
    return Examples(path, ids, texts, labels_array, np.asarray(synthetic, dtype=bool))


def merge_examples(parts: list[Examples]) -> Examples:
    """The rows of several files of one task, in order. A row that repeats one of an earlier file (the same id, texts
    and label: a file of generated rows that also holds the originals, say) is left out, with a warning that counts
    them."""
    seen: set[tuple] = set()
    keep: list[Examples] = []
    for part in parts:
        keys = [
            (part.ids[i], *(c[i] for c in part.texts), part.labels[i] if part.labels is not None else None)
            for i in range(len(part))
        ]
        fresh = [i for i, key in enumerate(keys) if key not in seen]
        if len(fresh) < len(part):
            log.warning(
                "%s: left out %d row(s) that an earlier file of the task already has", part.path, len(part) - len(fresh)
            )
        seen.update(keys)
        keep.append(part.take(fresh))
    labels = [p.labels for p in keep]
    return Examples(
        Path(",".join(str(p.path) for p in parts)),
        [i for p in keep for i in p.ids],
        [[t for p in keep for t in p.texts[c]] for c in range(len(keep[0].texts))],
        np.concatenate(labels) if all(x is not None for x in labels) else None,
        np.concatenate([p.is_synthetic() for p in keep]),
    )


def rows_with_lines(reader: Iterator[list[str]], path: Path) -> Iterator[tuple[int, list[str]]]:
    """The rows after the header, each with the line it starts on. A row may not span lines: in these files a quoted
    field that runs over a line end is an unbalanced quote, which would silently merge the rows up to the next
    quote into one field; it stops with the line where the quote opens."""
    end = reader.line_num  # the header's last line
    while True:
        start = end + 1
        try:
            row = next(reader, None)
        except csv.Error as e:
            raise MtbertError(f"{path}:{start}: cannot read this row ({e})") from None
        if row is None:
            return
        end = reader.line_num
        if end > start:
            raise MtbertError(
                f"{path}:{start}: a quoted field opens here and runs to line {end}, which would read lines "
                f'{start}-{end} as one row (an unbalanced quote?); write a quote inside a field as "" in a quoted '
                "field, or leave the field unquoted"
            )
        yield start, row


def write_predictions(path: str | Path, header: str, ids: list[str], predictions: np.ndarray) -> None:
    """Writes predictions in the original project's format (`id \\t Predicted_X` header, `id , value` rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"id \t {header} \n"] + [f"{i} , {p} \n" for i, p in zip(ids, predictions.tolist(), strict=True)]
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))


def read_predictions(path: str | Path) -> dict[str, float]:
    """Id -> prediction of a file in the original project's format (see write_predictions); errors name the line."""
    path = readable_file("predictions", path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    found = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split(",")]
        try:
            if len(parts) != 2:
                raise ValueError
            found[parts[0]] = float(parts[1])
        except ValueError:
            raise MtbertError(f"{path}, line {number}: expected `id , prediction`, got {line!r:.80}") from None
    return found
