"""Input as users write it: byte-order marks, keys given twice, tables where lines were expected, blank lines, one
file to evaluate, a damaged model description, a mistyped flag."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import mtbert
from mtbert.cli import main
from mtbert.config import Config, read_config_file
from mtbert.data.files import read_examples
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.model.tasks import TASKS
from mtbert.train.setup import run_name

BOM = "\ufeff"


@pytest.fixture()
def trained(cfg: Config) -> tuple[Config, Path]:
    cfg = replace(cfg, epochs=2)
    fit(cfg)
    return cfg, Path(cfg.save_dir) / run_name(cfg)


def test_a_byte_order_mark_is_accepted_in_data_configs_and_inputs(tmp_path, toy_data, trained, capsys) -> None:
    sst = toy_data / "ids-sst-dev.csv"
    marked = tmp_path / "marked.csv"
    marked.write_text(BOM + sst.read_text(encoding="utf-8"), encoding="utf-8")
    spec = TASKS["sst"]
    args = (spec.text_columns, spec.label_column, spec.parse_label, True)
    assert read_examples(marked, *args).ids == read_examples(sst, *args).ids
    config = tmp_path / "c.yaml"
    config.write_text(BOM + "lr: 1e-4\nepochs: 2\n", encoding="utf-8")
    assert read_config_file(config) == {"lr": 1e-4, "epochs": 2}
    _, folder = trained
    lines = tmp_path / "in.txt"
    lines.write_text(BOM + "a lovely movie\n", encoding="utf-8")
    main(["predict", "--checkpoint", str(folder), "--task", "sst", "--input", str(lines), "--format", "jsonl"])
    assert json.loads(capsys.readouterr().out)["sentence"] == "a lovely movie"


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [("c.yaml", "lr: 1e-4\nepochs: 2\nlr: 2e-4\n", 3), ("c.json", '{"lr": 1e-4,\n "epochs": 2,\n "lr": 2e-4}', 3)],
)
def test_a_key_given_twice_names_the_file_line_and_key(tmp_path, name, text, line) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MtbertError, match=rf"^{path}:{line}: 'lr' is given twice$"):
        read_config_file(path)


def test_a_bad_value_from_a_config_file_names_the_file(tmp_path, capsys) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("batch_size: 0\n")
    with pytest.raises(SystemExit) as stop:
        main(["train", "--config", str(path)])
    assert stop.value.code == 2
    assert f"{path}: --batch_size must be at least 1, got 0" in capsys.readouterr().err


def test_a_flag_error_is_one_usage_line_and_the_error(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["train", "--epochs", "x"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "usage: mtbert train [options]; see mtbert train --help",
        "mtbert train: error: argument --epochs: invalid int value: 'x'",
    ]


def test_encode_refuses_a_table_without_column_and_reads_its_column(tmp_path, tiny_checkpoint, capsys) -> None:
    table = tmp_path / "dev.csv"  # the CS224N layout: tab-separated, though .csv
    table.write_text("\tid\tsentence\tsentiment\n0\ta\tthe film is great\t4\n\n1\tb\ta dull plot\t1\n")
    with pytest.raises(SystemExit) as stop:
        main(["encode", "--model", str(tiny_checkpoint), "--input", str(table)])
    assert stop.value.code == 2 and "a table (header:" in capsys.readouterr().err
    main(["encode", "--model", str(tiny_checkpoint), "--input", str(table), "--column", "sentence"])
    by_column = capsys.readouterr().out.splitlines()
    plain = tmp_path / "plain.txt"
    plain.write_text("the film is great\na dull plot\n")
    main(["encode", "--model", str(tiny_checkpoint), "--input", str(plain)])
    assert by_column == capsys.readouterr().out.splitlines() and len(by_column) == 2


def test_predict_reads_columns_and_counts_the_empty_lines(trained, tmp_path, capsys, caplog) -> None:
    _, folder = trained
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("key,first,second\nk1,a man plays guitar,a man plays\nk2,a cat,a dog\n")
    main(["predict", "--checkpoint", str(folder), "--task", "sts", "--input", str(pairs), "--column", "first,second"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "id \t Predicted_Similiary " and [line.split(" , ")[0] for line in lines[1:]] == ["1", "2"]
    with pytest.raises(SystemExit):
        main(["predict", "--checkpoint", str(folder), "--task", "sts", "--input", str(pairs)])
    assert "--column names the column(s) to read" in capsys.readouterr().err
    text = tmp_path / "in.txt"
    text.write_text("a lovely movie\n\n   \nthe plot was dull\n")
    with caplog.at_level(logging.WARNING):
        main(["predict", "--checkpoint", str(folder), "--task", "sst", "--input", str(text)])
    assert f"{text}: 2 empty line(s) skipped" in caplog.text
    assert [line.split(" , ")[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["1", "4"]


def test_evaluate_scores_exactly_the_tasks_whose_files_are_given(trained, tmp_path, toy_data, capsys) -> None:
    _, folder = trained
    mine = tmp_path / "my-sst.csv"
    shutil.copy(toy_data / "ids-sst-dev.csv", mine)
    empty = tmp_path / "empty-data"
    empty.mkdir()  # nothing in --data_dir: only the named file is read
    main(["evaluate", "--checkpoint", str(folder), "--data_dir", str(empty), "--sst_dev", str(mine)])
    scored = json.loads(capsys.readouterr().out)
    assert set(scored) == {"sst/accuracy", "mean"} and scored["mean"] == scored["sst/accuracy"]
    main(["evaluate", "--checkpoint", str(folder), "--data_dir", str(toy_data)])
    assert set(json.loads(capsys.readouterr().out)) == {"sst/accuracy", "para/accuracy", "sts/pearson", "mean"}


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda m: m | {"tasks": "sst"}, "'tasks' should be a JSON list"),
        (lambda m: m | {"tasks": ["sst", "nli"]}, "neither built in nor declared"),
        (lambda m: {k: v for k, v in m.items() if k != "encoder"}, "'encoder'"),
        (lambda m: m | {"encoder": {**m["encoder"], "hidden_size": "wide"}}, "not a valid mtbert model description"),
        (lambda m: m | {"encoder": {**m["encoder"], "num_hidden_layers": 1}}, "weights do not match"),
        (lambda m: m | {"tasks": ["para", "sts"]}, "weights do not match"),
        (lambda m: [m], "not a valid mtbert model description"),
    ],
)
def test_a_damaged_model_description_is_one_line_naming_the_file(trained, tmp_path, damage, words, capsys) -> None:
    _, folder = trained
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    meta = json.loads((broken / "mtbert.json").read_text())
    (broken / "mtbert.json").write_text(json.dumps(damage(meta)))
    with pytest.raises(MtbertError) as e:
        mtbert.load(broken)
    assert str(e.value).startswith(str(broken)) and words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--checkpoint", str(broken)])
    assert stop.value.code == 2 and "Traceback" not in capsys.readouterr().err
