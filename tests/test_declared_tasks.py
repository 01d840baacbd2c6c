"""Tasks declared in a --tasks file: checked entry by entry, trained beside the built-in three through the one loop,
evaluated, predicted with their label names, saved with the model, and served over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import mtbert
from mtbert.cli import main
from mtbert.config import Config
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.inference.saved import load_model
from mtbert.model.heads import ConcatPairHead, CrossPairHead, ParaphraseHead, SentenceHead, SimilarityHead
from mtbert.model.tasks import TASKS, declared_spec, register
from mtbert.serve.http import Limits, create_app
from mtbert.task_file import read_task_file
from mtbert.train.setup import run_name

from .conftest import SST_ROWS, toy_config, write_csv
from .test_serve import call, serving

NLI_ROWS = [
    ("a man plays guitar", "a man plays a guitar", "entailment"),
    ("a dog runs in the park", "a cat sits on the mat", "contradiction"),
    ("two people are walking", "people walk on the street", "neutral"),
    ("a woman eats food", "a woman is eating", "entailment"),
    ("the cat sits on a mat", "the dog runs", "contradiction"),
    ("a man rides a horse", "a man rides a bike", "contradiction"),
    ("a woman plays piano", "a woman plays", "entailment"),
    ("people are walking", "two people walk in a park", "neutral"),
]
NLI = {
    "train": "nli-train.csv",
    "dev": "nli-dev.csv",
    "text": ["premise", "hypothesis"],
    "label": "label",
    "kind": "classes",
    "labels": ["entailment", "neutral", "contradiction"],
    "head": "pair",
    "metrics": ["accuracy", "f1"],
    "loss_weight": 2.0,
}


def task_file(folder: Path, entries: dict, **top) -> Path:
    """A --tasks file in `folder` with the NLI data beside it."""
    rows = [[f"n{i}", a, b, y] for i, (a, b, y) in enumerate(NLI_ROWS)]
    write_csv(folder / "nli-train.csv", ["id", "premise", "hypothesis", "label"], rows)
    write_csv(folder / "nli-dev.csv", ["id", "premise", "hypothesis", "label"], rows[:6])
    write_csv(folder / "nli-test.csv", ["id", "premise", "hypothesis"], [r[:3] for r in rows[:3]])
    path = folder / "tasks.yaml"
    path.write_text(yaml.safe_dump({"tasks": entries, **top}))
    return path


@pytest.fixture()
def nli_run(tmp_path: Path, toy_data: Path, tiny_checkpoint: Path) -> tuple[Config, dict]:
    tasks = task_file(toy_data, {"nli": {**NLI, "test": "nli-test.csv"}})
    cfg = toy_config(tmp_path, toy_data, tiny_checkpoint, epochs=3).updated(tasks=str(tasks))
    return cfg, fit(cfg)


def test_a_fourth_task_trains_beside_the_three_and_is_saved_with_the_model(nli_run) -> None:
    cfg, metrics = nli_run
    assert cfg.active_tasks == ("sst", "para", "sts", "nli") and cfg.loss_weights["nli"] == 2.0
    assert {"nli/accuracy", "nli/f1"} <= set(metrics)
    main_metrics = [metrics["sst/accuracy"], metrics["para/accuracy"], (metrics["sts/pearson"] + 1) / 2]
    assert metrics["mean"] == pytest.approx(np.mean([*main_metrics, metrics["nli/accuracy"]]))  # f1 not in it
    folder = Path(cfg.save_dir) / run_name(cfg)
    meta = json.loads((folder / "mtbert.json").read_text())
    assert meta["tasks"] == ["sst", "para", "sts", "nli"]
    assert meta["declared_tasks"]["nli"]["labels"] == ["entailment", "neutral", "contradiction"]
    # predictions files of the declared task: label names, beside SST's
    dev_out = Path(cfg.per_task["sst"].dev_out).parent / "nli-dev-output.csv"
    lines = dev_out.read_text().splitlines()
    assert lines[0] == "id \t Predicted_nli " and len(lines) == 7
    assert all(line.split(" , ")[1].strip() in NLI["labels"] for line in lines[1:])
    assert (dev_out.parent / "nli-test-output.csv").is_file()
    # a process that never read the task file loads the model: the declaration comes with it
    del TASKS["nli"]
    model, _, _ = load_model(folder)
    assert "nli" in TASKS and TASKS["nli"].label_names == ("entailment", "neutral", "contradiction")
    assert isinstance(model.heads["nli"], ParaphraseHead) and model.heads["nli"].mlp[-1].out_features == 3


def test_evaluate_and_predict_give_the_declared_task_with_its_label_names(nli_run, capsys, tmp_path) -> None:
    cfg, metrics = nli_run
    folder = Path(cfg.save_dir) / run_name(cfg)
    main(["evaluate", "--checkpoint", str(folder), "--data_dir", cfg.data_dir, "--precision", "fp32"])
    scored = json.loads(capsys.readouterr().out)
    for key in ("nli/accuracy", "nli/f1", "mean"):
        assert scored[key] == pytest.approx(metrics[key], abs=1e-6)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a man plays guitar\ta man plays\na cat\ta dog\n")
    main(["predict", "--checkpoint", str(folder), "--task", "nli", "--input", str(pairs), "--format", "jsonl"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    predictor = mtbert.load(folder, precision="fp32")
    expected = predictor.predict("nli", [("a man plays guitar", "a man plays"), ("a cat", "a dog")])
    assert [r["name"] for r in rows] == [e.name for e in expected]
    assert all(r["name"] == NLI["labels"][r["label"]] and len(r["probabilities"]) == 3 for r in rows)
    assert rows[0]["premise"] == "a man plays guitar" and rows[1]["hypothesis"] == "a dog"


def test_the_declared_task_is_served_on_its_own_route(nli_run) -> None:
    cfg, _ = nli_run
    predictor = mtbert.load(Path(cfg.save_dir) / run_name(cfg), precision="fp32")
    app = create_app(predictor, Limits(max_texts=8, max_chars=200, max_body_bytes=4096))
    with serving(app) as url:
        pairs = [["a man plays guitar", "a man plays"], ["a cat", "a dog"]]
        status, answer = call(url + "/tasks/nli", {"pairs": pairs})
        assert status == 200
        assert [r["name"] for r in answer["results"]] == [r.name for r in predictor.predict("nli", pairs)]
        assert call(url + "/tasks/nli", {"texts": ["one sentence"]})[0] == 422  # a pair task reads pairs
        assert call(url + "/tasks/nli", {"pairs": [["", "x"]]})[0] == 422  # the server's checks apply
        status, schema = call(url + "/openapi.json")
        assert "/tasks/nli" in schema["paths"] and "/sentiment" in schema["paths"]


def test_builtin_chooses_which_original_tasks_train_beside(tmp_path, toy_data, tiny_checkpoint) -> None:
    single = {"train": "sst2.csv", "dev": "sst2.csv", "text": "sentence", "label": "y", "kind": "binary"}
    rows = [[f"s{i}", s, int(y >= 3)] for i, (s, y) in enumerate(SST_ROWS)]
    write_csv(toy_data / "sst2.csv", ["id", "sentence", "y"], rows)
    tasks = task_file(toy_data, {"sst2": single}, builtin=[])
    cfg = toy_config(tmp_path, toy_data, tiny_checkpoint, epochs=2).updated(tasks=str(tasks))
    assert cfg.active_tasks == ("sst2",)
    metrics = fit(cfg)
    assert "sst2/accuracy" in metrics and metrics["mean"] == metrics["sst2/accuracy"]
    assert not any(k.startswith(("sst/", "para/", "sts/")) for k in metrics)
    assert cfg.updated(sts=True).active_tasks == ("sts", "sst2")  # the flags still pick built-in ones


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"text": "a"}, "missing `train`"),
        ({**NLI, "kind": "multi"}, "kind: expected one of classes, binary, regression"),
        ({**NLI, "labels": ["a", "a"]}, "labels: expected a list of distinct names"),
        ({**NLI, "labels": None, "classes": None}, "needs `labels: [names]` or `classes: K`"),
        ({**NLI, "classes": 4}, "classes: 4, but 3 labels are named"),
        ({**NLI, "text": ["a", "b", "c"]}, "text: expected one column name or a list of two"),
        ({**NLI, "text": "premise"}, "head: pair reads a sentence pair"),
        ({**NLI, "head": "cosine"}, "head: cosine gives a similarity score"),
        ({**NLI, "metrics": ["pearson"]}, "metrics: expected a list of accuracy, f1"),
        ({**NLI, "kind": "regression", "head": "cosine"}, "labels: a regression has no label names"),
        ({**NLI, "kind": "regression", "labels": None, "metrics": None}, "needs `range: [low, high]`"),
        ({**NLI, "loss_weight": -1}, "loss_weight: expected a number, at least 0"),
        ({**NLI, "colour": "red"}, "unknown key(s) colour"),
        ("just a string", "expected a mapping of settings"),
    ],
)
def test_a_bad_entry_is_one_line_naming_the_file_and_the_entry(tmp_path, entry, words) -> None:
    if isinstance(entry, dict):
        entry = {k: v for k, v in entry.items() if v is not None}
    path = task_file(tmp_path, {"nli": entry})
    with pytest.raises(MtbertError) as e:
        read_task_file(path)
    assert str(e.value).startswith(f"{path}: task 'nli': ") and words in str(e.value) and "\n" not in str(e.value)


def test_bad_task_files_exit_2_from_the_command_line(tmp_path, capsys) -> None:
    path = task_file(tmp_path, {"sst": NLI})
    with pytest.raises(SystemExit) as stop:
        main(["train", "--tasks", str(path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"{path}: task 'sst': the name of a built-in task" in err and "Traceback" not in err
    (tmp_path / "t.yaml").write_text("tasks: [1, 2]\n")
    with pytest.raises(SystemExit):
        main(["train", "--tasks", str(tmp_path / "t.yaml")])
    assert "`tasks` must map task names to their settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--tasks", str(tmp_path / "missing.yaml")])
    assert "missing.yaml" in capsys.readouterr().err


def test_label_cells_are_names_or_indexes_and_a_bad_one_names_the_line(tmp_path) -> None:
    decl = read_task_file(task_file(tmp_path, {"nli": NLI})).tasks["nli"]
    parse = declared_spec(decl).parse_label
    assert [parse("entailment"), parse("contradiction"), parse("1")] == [0.0, 2.0, 1.0]
    for bad in ("maybe", "3", "1.5"):
        with pytest.raises(ValueError, match="expected one of entailment, neutral, contradiction"):
            parse(bad)
    write_csv(tmp_path / "nli-train.csv", ["id", "premise", "hypothesis", "label"], [["a", "x", "y", "maybe"]])
    from mtbert.data.files import read_examples

    spec = declared_spec(decl)
    with pytest.raises(MtbertError, match=r"nli-train\.csv:2: .*maybe"):
        read_examples(tmp_path / "nli-train.csv", spec.text_columns, spec.label_column, spec.parse_label, True)


def test_each_head_and_kind_computes_what_it_declares(tmp_path) -> None:
    base = {"train": "a.csv", "dev": "a.csv", "label": "y"}
    entries = {
        "topic": {**base, "text": "s", "kind": "classes", "classes": 4, "metrics": ["f1", "accuracy"]},
        "spam": {**base, "text": "s", "kind": "binary", "labels": ["ham", "spam"]},
        "match": {**base, "text": ["a", "b"], "kind": "binary", "head": "mlp"},
        "rate": {**base, "text": ["a", "b"], "kind": "regression", "range": [1, 3], "metrics": "spearman"},
        "entail": {**base, "text": ["a", "b"], "kind": "classes", "classes": 3, "head": "cross"},
    }
    decls = read_task_file(task_file(tmp_path, entries)).tasks
    register(decls)
    specs = {name: TASKS[name] for name in entries}
    heads = {name: spec.make_head(8, 0.0) for name, spec in specs.items()}
    u, v = torch.randn(5, 8), torch.randn(5, 8)
    assert isinstance(heads["topic"], SentenceHead) and heads["topic"](u).shape == (5, 4)
    assert isinstance(heads["spam"], SentenceHead) and heads["spam"](u).shape == (5,)
    assert isinstance(heads["match"], ConcatPairHead) and heads["match"](u, v).shape == (5,)
    assert isinstance(heads["rate"], SimilarityHead)
    torch.testing.assert_close(heads["rate"](u, v), 1 + 2 * torch.cosine_similarity(u, v, dim=-1))
    assert isinstance(heads["entail"], CrossPairHead) and heads["entail"](u).shape == (5, 3) and specs["entail"].cross
    assert specs["rate"].predict(torch.tensor([0.0, 2.0, 9.0])).tolist() == [1.0, 2.0, 3.0]  # clamped to the range
    # metrics against hand-computed values; the first declared one is the main one
    predictions, labels = np.array([0, 1, 1, 2, 3, 3]), np.array([0, 1, 2, 2, 3, 0])
    f1s = [2 / 3, 2 / 3, 2 / 3, 2 / 3]  # each class: one hit, two guesses or two labels
    assert specs["topic"].metric_name == "f1"
    assert specs["topic"].metrics(predictions, labels) == pytest.approx(
        {"topic/f1": np.mean(f1s), "topic/accuracy": 4 / 6}
    )
    binary = specs["spam"].metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    assert binary == pytest.approx({"spam/accuracy": 0.5})
    assert specs["spam"].written(np.array([1, 0])).tolist() == ["spam", "ham"]
    assert specs["rate"].metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.5, 3.0])) == pytest.approx(
        {"rate/spearman": 1.0}
    )
    assert specs["rate"].unit_score(1.0) == 1.0 and specs["rate"].unit_score(-1.0) == 0.0


def test_a_search_reads_the_task_file_from_its_trials_and_keeps_hub_names(tmp_path, toy_data, monkeypatch) -> None:
    from mtbert.lab.hpo import run_config, trial_base

    task_file(toy_data, {"nli": NLI})
    monkeypatch.chdir(toy_data)
    base = trial_base(Config(data_dir=".", model="acme/tiny-bert@v1", tasks="tasks.yaml"))
    assert base.model == "acme/tiny-bert@v1" and base.tasks == str(toy_data / "tasks.yaml")
    assert base.active_tasks == ("sst", "para", "sts", "nli")
    trial = run_config(base, {"lr": 1e-3}, tmp_path / "t1")
    assert Path(trial.task_settings("nli").dev_out).is_relative_to(tmp_path / "t1")  # beside the trial's SST file


def test_report_and_export_carry_the_declared_task(nli_run, tmp_path, capsys) -> None:
    from safetensors.torch import load_file

    from mtbert.serve.export import export

    cfg, metrics = nli_run
    main(["report", cfg.logdir, "--out", str(tmp_path / "report")])
    table = capsys.readouterr().out
    assert "accuracy (best epoch)" in table and f"{metrics['nli/accuracy']:.3f}" in table
    assert "nli/accuracy" in (tmp_path / "report" / "report.md").read_text()
    out = export(Path(cfg.save_dir) / run_name(cfg), tmp_path / "hf")
    heads = load_file(out / "mtbert_heads.safetensors")
    assert heads["heads.nli.mlp.4.weight"].shape[0] == 3  # the three NLI labels


@pytest.mark.slow
def test_an_ablation_runs_and_tables_the_declared_task(tmp_path, toy_data, tiny_checkpoint) -> None:
    from mtbert.lab.ablate import Ablation, ablate

    tasks = task_file(toy_data, {"nli": NLI})
    cfg = toy_config(tmp_path, toy_data, tiny_checkpoint, epochs=1).updated(tasks=str(tasks))
    result = ablate(cfg, Ablation(rows="baseline,ema", seeds=2, ablate_dir=str(tmp_path / "ab")))
    table = result.table.read_text()
    runs = [json.loads((tmp_path / "ab" / "ema" / f"seed-{cfg.seed + k}" / "done.json").read_text()) for k in (0, 1)]
    values = [r["best"]["nli/accuracy"] for r in runs]
    row = next(line for line in table.split("nli/accuracy", 1)[1].splitlines() if line.startswith("| ema |"))
    assert f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" in row  # the cell is its runs' mean ± std
