"""A task's split read and tokenized once (TaskData), and the data sets of all tasks fetched and validated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtbert.data.fetch import fetch
from mtbert.data.files import Examples, merge_examples, read_examples
from mtbert.data.tagging import Tagger
from mtbert.model.tags import Tags
from mtbert.model.tasks import TASKS, TaskSpec
from mtbert.model.tokenizer import Tokenizer
from mtbert.task_file import BUILTIN


@dataclass
class TaskData:
    """One task's split, tokenized once: tokens[c][i] are the word-piece ids of text column c of row i."""

    task: str
    examples: Examples
    tokens: list[list[list[int]]]
    labels: torch.Tensor | None
    tags: list[list[Tags]] | None = None  # tags[c][i]: the POS and NER tag ids of those word pieces (tagged)

    def __len__(self) -> int:
        return len(self.examples)

    def rows(self, index: np.ndarray) -> list[list[list[int]]]:
        return [[column[i] for i in index] for column in self.tokens]

    def tag_rows(self, index: np.ndarray) -> list[list[Tags]] | None:
        return [[column[i] for i in index] for column in self.tags] if self.tags is not None else None

    def head(self, n: int) -> TaskData:
        """The first n rows."""
        e = self.examples
        examples = e.take(np.arange(min(n, len(e))))
        tokens = [column[:n] for column in self.tokens]
        tags = [column[:n] for column in self.tags] if self.tags is not None else None
        return TaskData(self.task, examples, tokens, self.labels[:n] if self.labels is not None else None, tags)


def read_task(
    path: Path | list[Path], task: str, tokenizer: Tokenizer, require_labels: bool = True, tagger: Tagger | None = None
) -> TaskData:
    """Reads and validates a task's CSV file, or several merged (see read_examples, merge_examples), tokenizes its
    sentences and, with a tagger (--additional_input), tags them."""
    spec = TASKS[task]
    paths = path if isinstance(path, list) else [path]
    parts = [read_examples(p, spec.text_columns, spec.label_column, spec.parse_label, require_labels) for p in paths]
    return task_data(task, parts[0] if len(parts) == 1 else merge_examples(parts), tokenizer, tagger)


def task_data(task: str, examples: Examples, tokenizer: Tokenizer, tagger: Tagger | None = None) -> TaskData:
    """Tokenized (and tagged) rows of `examples`."""
    labels = torch.from_numpy(examples.labels) if examples.labels is not None else None
    if tagger is None:
        return TaskData(task, examples, [tokenizer.encode_ids(column) for column in examples.texts], labels)
    tokens, tags = [], []
    for column in examples.texts:
        ids, offsets = tokenizer.encode_offsets(column)
        tokens.append(ids)
        tags.append(tagger.tag_ids(column, offsets))
    return TaskData(task, examples, tokens, labels, tags)


def fetch_data(source: str | None, dest: Path) -> list[Path]:
    """Fetches every task's train, dev and test files into `dest` (see fetch), each validated as training reads it."""

    def validator(spec: TaskSpec, split: str) -> Callable[[Path], object]:
        return lambda path: read_examples(
            path, spec.text_columns, spec.label_column, spec.parse_label, require_labels=split != "test"
        )

    return fetch(
        {TASKS[t].files[split]: validator(TASKS[t], split) for t in BUILTIN for split in TASKS[t].files}, source, dest
    )
