"""The CS224N CSV files: reading and validating them, and writing prediction files in the original format."""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtbert.errors import MtbertError

log = logging.getLogger(__name__)


@dataclass
class Examples:
    """Rows of one CSV file: ids, the text columns (one list per column) and labels (None for unlabelled files)."""

    path: Path
    ids: list[str]
    texts: list[list[str]]  # texts[c][i]: column c of row i
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)


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
    if not path.is_file():
        raise MtbertError(f"{path}: no such file (fetch the data with `mtbert data fetch`, or check --data_dir)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise MtbertError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x})") from e
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
    skipped = 0
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
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
        for c, at in enumerate(text_at):
            texts[c].append(row[at].strip())
    if skipped:
        log.warning("%s: skipped %d row(s) without a %s label", path, skipped, label_column)
    if not ids:
        raise MtbertError(f"{path}: no data rows after the header")
    return Examples(path, ids, texts, np.asarray(labels, dtype=np.float32) if has_label else None)


def write_predictions(path: str | Path, header: str, ids: list[str], predictions: np.ndarray) -> None:
    """Writes predictions in the original project's format (`id \\t Predicted_X` header, `id , value` rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"id \t {header} \n"] + [f"{i} , {p} \n" for i, p in zip(ids, predictions.tolist(), strict=True)]
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes a file so that a crash leaves either the old or the new content, never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
