"""Generated training rows: several training files read as one, generated rows marked, and capped per epoch."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from mtbert.cli import main, train_parser
from mtbert.config import Config, config_from_args
from mtbert.data.sampler import MultitaskSampler
from mtbert.data.task_data import read_task
from mtbert.data.task_files import split_files
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.model.tokenizer import Tokenizer
from mtbert.train.setup import setup_sampler
from tests.conftest import SST_ROWS

GENERATED = [("a great lovely film", 4), ("the dull awful plot", 0), ("a fine movie", 2)]


def write_sst(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    """An SST file whose rows are (index column, sentence, label): index `synthetic` marks a generated row."""
    lines = ["\tid\tsentence\tsentiment"] + [f"{index}\t{index}-{i}\t{s}\t{y}" for i, (index, s, y) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    """An original SST file, and one that holds its rows again followed by generated ones (as the original project's
    ids-sst-train-syn.csv does)."""
    original = [(str(i), s, y) for i, (s, y) in enumerate(SST_ROWS)]
    both = original + [("synthetic", s, y) for s, y in GENERATED]
    return write_sst(tmp_path / "sst.csv", original), write_sst(tmp_path / "sst-syn.csv", both)


def test_several_files_read_as_one_with_repeated_rows_left_out(files, tiny_checkpoint: Path, caplog) -> None:
    original, both = files
    with caplog.at_level(logging.WARNING):
        data = read_task([original, both], "sst", Tokenizer.from_pretrained(tiny_checkpoint))
    assert len(data) == len(SST_ROWS) + len(GENERATED)
    assert f"{both}: left out {len(SST_ROWS)} row(s) that an earlier file of the task already has" in caplog.text
    assert data.examples.is_synthetic().tolist() == [False] * len(SST_ROWS) + [True] * len(GENERATED)
    assert data.examples.texts[0][-1] == GENERATED[-1][0] and data.labels[-1] == GENERATED[-1][1]


def test_the_flag_repeated_or_comma_separated(tmp_path: Path) -> None:
    parser = train_parser()
    for flags in (["--sst_train", "a.csv", "--sst_train", "b.csv"], ["--sst_train", "a.csv,b.csv"]):
        cfg = config_from_args(parser, parser.parse_args(flags))
        assert split_files(cfg, "sst", "train") == [Path("a.csv"), Path("b.csv")]
    assert split_files(Config(data_dir="d"), "sst", "train") == [Path("d/ids-sst-train.csv")]
    settings = tmp_path / "run.yaml"
    settings.write_text("sst_train: a.csv,b.csv\nepochs: 2\n")  # the command line's value replaces the file's
    cfg = config_from_args(parser, parser.parse_args(["--config", str(settings), "--sst_train", "c.csv"]))
    assert (cfg.per_task["sst"].train, cfg.epochs) == ("c.csv", 2)


def test_synthetic_ratio_caps_the_generated_rows_of_each_epoch() -> None:
    mask = np.array([False] * 40 + [True] * 60)
    sampler = MultitaskSampler({"sst": 100, "sts": 30}, 50, 8, seed=3, synthetic={"sst": mask}, synthetic_ratio=0.2)
    for epoch in range(3):
        drawn = np.concatenate([rows["sst"] for rows in sampler.epoch(epoch)])
        assert len(drawn) == 50 and mask[drawn].sum() == 10  # floor(0.2 * 50) generated rows, 40 original
        assert len(set(drawn[mask[drawn]])) == 10 and len(set(drawn[~mask[drawn]])) == 40  # without replacement
        assert mask[drawn[:25]].sum() not in (0, 10)  # mixed through the epoch, not appended
    few = MultitaskSampler({"sst": 100}, 50, 8, seed=3, synthetic={"sst": mask}, synthetic_ratio=1.0)
    assert all(mask[np.concatenate([r["sst"] for r in few.epoch(e)])].sum() == 50 for e in range(2))


def test_without_a_ratio_generated_rows_are_drawn_as_before() -> None:
    mask = np.array([False] * 10 + [True] * 15)
    plain = MultitaskSampler({"sst": 25}, 30, 8, seed=5)
    marked = MultitaskSampler({"sst": 25}, 30, 8, seed=5, synthetic={"sst": mask})
    for epoch in range(2):
        rng = np.random.default_rng([5, epoch])  # the draw of the sampler before generated rows existed
        expected = np.concatenate([rng.permutation(25) for _ in range(2)])[:30]
        for sampler in (plain, marked):
            assert np.array_equal(np.concatenate([r["sst"] for r in sampler.epoch(epoch)]), expected)


def test_training_on_several_files_with_a_ratio(files, cfg: Config, caplog) -> None:
    original, both = files
    run = dataclasses.replace(cfg.updated(sst_train=f"{original},{both}"), synthetic_ratio=0.25)
    with caplog.at_level(logging.INFO):
        best = fit(run)
    assert "sst training rows: 8 original, 3 generated" in caplog.text
    assert best["epoch"] >= 1
    # what the run drew: per epoch at most a quarter of its SST examples generated, and the rest original rows
    data = {"sst": read_task([original, both], "sst", Tokenizer.from_pretrained(cfg.model))}
    sampler = setup_sampler(run.updated(sst=True), data)
    generated = data["sst"].examples.is_synthetic()
    for epoch in range(run.epochs):
        drawn = np.concatenate([batch["sst"] for batch in sampler.epoch(epoch)])
        assert len(drawn) == run.samples_per_epoch and generated[drawn].sum() <= 0.25 * len(drawn)
        assert generated[drawn].any()  # (the cap, not an absence of generated rows)
    with pytest.raises(MtbertError, match="--synthetic_ratio 0.25: the training files have no generated rows"):
        setup_sampler(
            dataclasses.replace(cfg, synthetic_ratio=0.25),
            {"sst": read_task(original, "sst", Tokenizer.from_pretrained(cfg.model))},
        )


def test_synthetic_ratio_out_of_range_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--synthetic_ratio", "1.5"])
    assert e.value.code == 2 and "--synthetic_ratio must be in [0, 1], got 1.5" in capsys.readouterr().err
