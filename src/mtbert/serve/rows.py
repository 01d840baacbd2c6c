"""What `mtbert predict` reads and writes besides CS224N files: plain-text or JSON-lines input, and results as the
original project's prediction lines, JSON lines or CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict

from mtbert.errors import MtbertError
from mtbert.model.tasks import TASKS

FORMATS = ("original", "jsonl", "csv")


def read_rows(text: str, task: str, source: str) -> tuple[list[str], list[list[str]]]:
    """The ids and text columns of the examples in `text`, for `task`:

    - JSON lines: one object per line with the task's text columns (SST: "sentence", or "text"; pairs: "sentence1"
      and "sentence2") and optionally an "id";
    - plain text: one example per line, a pair's two sentences separated by a tab.

    Blank lines are skipped; ids default to the line numbers. Errors name `source` and the line.
    """
    names = TASKS[task].text_columns
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
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
