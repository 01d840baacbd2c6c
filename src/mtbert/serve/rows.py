"""What `mtbert predict` reads and writes besides CS224N files: plain-text or JSON-lines input, and results as the
original project's prediction lines, JSON lines or CSV."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict

from mtbert.errors import MtbertError
from mtbert.model.tasks import TASKS

log = logging.getLogger(__name__)
FORMATS = ("original", "jsonl", "csv")


def read_rows(text: str, task: str, source: str) -> tuple[list[str], list[list[str]]]:
    """The ids and text columns of the examples in `text`, for `task`:

    - JSON lines: one object per line with the task's text columns (SST: "sentence", or "text"; pairs: "sentence1"
      and "sentence2") and optionally an "id";
    - plain text: one example per line, a pair's two sentences separated by a tab.

    Blank lines are skipped (counted in one warning); ids default to the line numbers. Errors name `source` and the
    line.
    """
    names = TASKS[task].text_columns
    lines = text_lines(text, source)
    if not lines:
        raise MtbertError(f"{source}: no sentences to predict")
    ids: list[str] = []
    columns: list[list[str]] = [[] for _ in names]
    as_json = lines[0][1].lstrip().startswith("{")
    for n, line in lines:
        row_id, parts = (
            _json_row(line, names, f"{source}:{n}") if as_json else (str(n), [p.strip() for p in line.split("\t")])
        )
        ids.append(row_id)
        if len(parts) != len(names):
            raise MtbertError(f"{source}:{n}: expected {len(names)} tab-separated sentence(s), got {len(parts)}")
        for c, part in enumerate(parts):
            columns[c].append(part)
    return ids, columns


def text_lines(text: str, source: str) -> list[tuple[int, str]]:
    """The non-blank lines of `text` with their line numbers; the blank ones skipped, counted in one warning."""
    numbered = list(enumerate(text.splitlines(), start=1))
    lines = [(n, line) for n, line in numbered if line.strip()]
    if len(lines) < len(numbered):
        log.warning("%s: %d empty line(s) skipped", source, len(numbered) - len(lines))
    return lines


TABLES = (".csv", ".tsv")


def read_table(text: str, columns: list[str], source: str) -> tuple[list[str], list[list[str]]]:
    """The ids (its `id` column, else the row numbers) and the named columns of a table with a header: tab-separated
    where the header has a tab (the CS224N files, .csv as they are), else comma-separated. Empty rows are skipped,
    counted in one warning."""
    delimiter = "\t" if "\t" in text.split("\n", 1)[0] else ","
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    if not rows:
        raise MtbertError(f"{source}: empty; expected a header with the column(s) {', '.join(columns)}")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in columns if c not in header]
    if missing:
        raise MtbertError(f"{source}:1: no column {missing[0]!r} (header: {', '.join(h for h in header if h)})")
    at, id_at = [header.index(c) for c in columns], header.index("id") if "id" in header else None
    body = [(n, r) for n, r in enumerate(rows[1:], start=2) if any(cell.strip() for cell in r)]
    if len(body) < len(rows) - 1:
        log.warning("%s: %d empty row(s) skipped", source, len(rows) - 1 - len(body))
    ids, out = [], [[] for _ in columns]
    for n, row in body:
        if len(row) < len(header):
            raise MtbertError(f"{source}:{n}: {len(row)} cells where the header has {len(header)}")
        ids.append(row[id_at] if id_at is not None else str(n - 1))
        for c, i in enumerate(at):
            out[c].append(row[i].strip())
    if not ids:
        raise MtbertError(f"{source}: no rows under the header")
    return ids, out


def refuse_table(source: str, text: str, flag: str, tabs: bool = False) -> None:
    """A .csv or .tsv file (`tabs`: or a first line with tabs) read as lines would send its header, ids and
    separators to the model: refused."""
    if source.lower().endswith(TABLES) or (tabs and "\t" in text.split("\n", 1)[0]):
        header = text.split("\n", 1)[0].strip()
        raise MtbertError(f"{source}: a table (header: {header[:80]}); {flag} names the column(s) to read")


def _json_row(line: str, names: tuple[str, ...], where: str) -> tuple[str, list[str]]:
    """A JSON line's id (default: its line number) and texts."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise MtbertError(f"{where}: not a JSON object ({e.msg})") from None
    if not isinstance(row, dict):
        raise MtbertError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if names == ("sentence",) and "sentence" not in row and "text" in row:
        row["sentence"] = row["text"]
    texts = []
    for name in names:
        if not isinstance(row.get(name), str):
            raise MtbertError(f'{where}: needs a string "{name}"' + (' (or "text")' if name == "sentence" else ""))
        texts.append(row[name])
    return str(row.get("id", where.rsplit(":", 1)[1])), texts


def format_rows(task: str, ids: list[str], columns: list[list[str]], results: list, fmt: str) -> Iterator[str]:
    """The lines (without newlines) of the results of `task` in `fmt` (see FORMATS); `results` as the Predictor
    gives them."""
    spec = TASKS[task]
    fields = [result_fields(task, r) for r in results]
    if fmt == "original":
        yield f"id \t {spec.prediction_header} "  # as the prediction files of training, trailing spaces included
        for i, f in zip(ids, fields, strict=True):  # a declared task with label names: the name
            yield f"{i} , {f['name'] if spec.label_names else f.get('label', f.get('similarity', f.get('score')))} "
    elif fmt == "jsonl":
        for n, (i, f) in enumerate(zip(ids, fields, strict=True)):
            yield json.dumps(
                {"id": i, **{name: col[n] for name, col in zip(spec.text_columns, columns, strict=True)}, **f}
            )
    elif fmt == "csv":
        head = ["id", *spec.text_columns, *_csv_cells(fields[0]).keys()]
        yield _csv_line(head)
        for n, (i, f) in enumerate(zip(ids, fields, strict=True)):
            yield _csv_line([i, *(col[n] for col in columns), *_csv_cells(f).values()])
    else:
        raise ValueError(f"unknown format {fmt!r}")


def result_fields(task: str, result: object) -> dict:
    """A result as named fields; a score is STS's similarity, or a declared regression's score."""
    if isinstance(result, float):
        return {"similarity" if task == "sts" else "score": result}
    return asdict(result)


def _csv_cells(fields: dict) -> dict:
    """The class probabilities (SST's five) as columns p0, p1, ..."""
    cells = {k: v for k, v in fields.items() if k != "probabilities"}
    cells.update({f"p{y}": p for y, p in enumerate(fields.get("probabilities", []))})
    return cells


def _csv_line(cells: list) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    return out.getvalue()
