"""The CS224N CSV files: reading and validating them, fetching them, the multitask sampler, prediction files."""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtbert.errors import MtbertError

log = logging.getLogger(__name__)

# The course's public copies of the data sets (Stanford CS224N minBERT default final project).
PUBLIC_DATA_URL = "https://raw.githubusercontent.com/gpoesia/minbert-default-final-project/main/data"


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


class MultitaskSampler:
    """Draws each epoch's examples: `samples_per_epoch` per task, random and without replacement within the epoch
    (a task smaller than that is cycled through in fresh permutations). Step i takes batch i of every task."""

    def __init__(self, sizes: dict[str, int], samples_per_epoch: int, batch_size: int, seed: int):
        self.sizes = sizes
        self.samples_per_epoch = samples_per_epoch
        self.batch_size = batch_size
        self.seed = seed

    def __len__(self) -> int:
        return -(-self.samples_per_epoch // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """Yields {task: row indices} for every step of `epoch`; the same (seed, epoch) gives the same draw."""
        rng = np.random.default_rng([self.seed, epoch])
        draws = {}
        for task, n in self.sizes.items():
            perms = [rng.permutation(n) for _ in range(-(-self.samples_per_epoch // n))]
            draws[task] = np.concatenate(perms)[: self.samples_per_epoch]
        for start in range(0, self.samples_per_epoch, self.batch_size):
            yield {task: d[start : start + self.batch_size] for task, d in draws.items()}


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


def fetch(
    files: dict[str, Callable[[Path], object]], source: str | None, dest: Path, progress: bool = True
) -> list[Path]:
    """Copies (from a folder) or downloads (from a URL) each named file into `dest`, validating it before it lands.

    `files` maps a file name to a validator that raises MtbertError on a malformed file. A file that is absent
    from a local mirror is skipped with a warning (some mirrors lack the Quora test file).
    """
    dest.mkdir(parents=True, exist_ok=True)
    src = source or PUBLIC_DATA_URL
    is_url = "://" in src
    written = []
    with tempfile.TemporaryDirectory(dir=dest, prefix=".fetch-") as staging:
        for name, validate in files.items():
            # staged under its own name, so that validation messages name the file as the user knows it
            staged = Path(staging) / name
            if is_url:
                _download(f"{src.rstrip('/')}/{name}", staged, progress)
            else:
                origin = Path(src) / name
                if not origin.is_file():
                    log.warning("%s: not in %s, skipped", name, src)
                    continue
                shutil.copyfile(origin, staged)
            try:
                validate(staged)
            except MtbertError as e:
                raise MtbertError(str(e).replace(str(staged), f"{src.rstrip('/')}/{name}")) from e
            os.replace(staged, dest / name)
            written.append(dest / name)
    return written


def _download(url: str, to: Path, progress: bool) -> None:
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(to, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress) as bar:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    bar.update(len(chunk))
    except OSError as e:  # URLError and HTTPError are OSErrors
        to.unlink(missing_ok=True)
        raise MtbertError(f"{url}: download failed ({e}); give a local copy with --source DIR") from e
