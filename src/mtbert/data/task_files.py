"""Which files a task reads for each split: the file named by its flag (--sst_train, --para_dev, ...), or the task's
default file in --data_dir."""

from __future__ import annotations

from pathlib import Path

from mtbert.config import Config
from mtbert.model.tasks import TASKS


def split_files(cfg: Config, task: str, split: str) -> list[Path]:
    """A task's files of `split` ("train", "dev" or "test"): its flag's (comma-separated files are read as one), or
    the default one in --data_dir."""
    given = getattr(cfg.task_settings(task), split)
    if given and given.strip(","):
        return [Path(p.strip()) for p in given.split(",") if p.strip()]
    return [Path(cfg.data_dir) / TASKS[task].files[split]]


def split_file(cfg: Config, task: str, split: str) -> Path:
    """The one file of a task's dev or test split."""
    return split_files(cfg, task, split)[0]
