"""Which files a task reads for each split: the file named by its flag (--sst_train, --para_dev, ...), or the task's
default file in --data_dir."""

from __future__ import annotations

from pathlib import Path

from mtbert.config import Config
from mtbert.model.tasks import TASKS


def split_files(cfg: Config, task: str, split: str) -> list[Path]:
    """A task's files of `split` ("train", "dev" or "test"): its flag's (comma-separated files are read as one), or
    the default one in --data_dir; a declared task's from its --tasks entry (or from the model that declared it).
    Empty: a declared task without a test file."""
    given = getattr(cfg.task_settings(task), split) if task in cfg.active_tasks or task in cfg.per_task else None
    if given and given.strip(","):
        return [Path(p.strip()) for p in given.split(",") if p.strip()]
    default = TASKS[task].files.get(split)
    return [Path(cfg.data_dir) / default] if default else []


def split_file(cfg: Config, task: str, split: str) -> Path | None:
    """The one file of a task's dev or test split (None: a declared task without a test file)."""
    files = split_files(cfg, task, split)
    return files[0] if files else None
