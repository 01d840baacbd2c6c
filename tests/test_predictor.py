"""The Python API (mtbert.load) and `mtbert predict`'s input and output formats."""

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

import mtbert
from mtbert.cli import main
from mtbert.config import Config
from mtbert.data.files import read_examples
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.model.tasks import TASKS
from mtbert.serve.rows import read_rows


@pytest.fixture()
def trained(cfg: Config) -> tuple[Config, Path]:
    fit(replace(cfg, epochs=2))
    return cfg, Path(cfg.save_dir) / "finetune-2-0.003-adamw-none-multitask"


def dev_rows(cfg: Config, task: str) -> tuple[list[str], list[list[str]], list[float]]:
    spec = TASKS[task]
    e = read_examples(
        Path(cfg.data_dir) / spec.files["dev"], spec.text_columns, spec.label_column, spec.parse_label, True
    )
    return e.ids, e.texts, e.labels.tolist()


def test_the_api_gives_what_evaluate_scores(trained, capsys) -> None:
    cfg, folder = trained
    model = mtbert.load(folder, precision="fp32")
    assert model.tasks == ("sst", "para", "sts") and model.device.type == "cpu"
    main(["evaluate", "--checkpoint", str(folder), "--data_dir", cfg.data_dir, "--precision", "fp32"])
    scored = json.loads(capsys.readouterr().out)

    _, (sentences,), labels = dev_rows(cfg, "sst")
    sentiment = model.sentiment(sentences)
    assert all(r.probabilities[r.label] == max(r.probabilities) for r in sentiment)
    assert all(abs(sum(r.probabilities) - 1) < 1e-5 and len(r.probabilities) == 5 for r in sentiment)
    assert sum(r.label == y for r, y in zip(sentiment, labels, strict=True)) / len(labels) == pytest.approx(
        scored["sst/accuracy"]
    )
    # the dev predictions training wrote are evaluate's: the API gives the same labels, in input order
    written = [line.split(" , ")[1].strip() for line in Path(cfg.per_task["sst"].dev_out).read_text().splitlines()[1:]]
    assert [str(r.label) for r in sentiment] == written

    _, (a, b), labels = dev_rows(cfg, "para")
    para = model.paraphrase(list(zip(a, b, strict=True)))
    assert all(r.label == int(r.probability > 0.5) for r in para)
    assert sum(r.label == y for r, y in zip(para, labels, strict=True)) / len(labels) == pytest.approx(
        scored["para/accuracy"]
    )

    _, (a, b), labels = dev_rows(cfg, "sts")
    scores = model.similarity(list(zip(a, b, strict=True)))
    assert all(0.0 <= s <= 5.0 for s in scores)
    assert TASKS["sts"].metric(scores, labels) == pytest.approx(scored["sts/pearson"])
    # one row alone gives what it gives among the others (batching changes nothing)
    assert model.similarity([(a[3], b[3])])[0] == pytest.approx(scores[3], abs=1e-5)
    assert model.sentiment([]) == [] and model.similarity([]) == []


def test_the_api_refuses_what_is_not_text(trained) -> None:
    model = mtbert.load(trained[1])
    with pytest.raises(TypeError, match="not one string"):
        model.sentiment("a single string")
    with pytest.raises(TypeError, match=r"pairs\[1\]: expected two texts"):
        model.similarity([("a", "b"), ("c",)])
    with pytest.raises(TypeError, match=r"texts\[0\]: expected a string, got int"):
        model.sentiment([3])


def test_a_model_without_the_task_says_so(cfg: Config) -> None:
    fit(replace(cfg, epochs=1, sst=True))
    model = mtbert.load(Path(cfg.save_dir) / "finetune-1-0.003-adamw-none-multitask")
    with pytest.raises(MtbertError, match="not trained on sts"):
        model.similarity([("a", "b")])


def test_predict_reads_stdin_and_writes_json_lines_and_csv(trained, capsys, monkeypatch) -> None:
    cfg, folder = trained
    model = mtbert.load(folder, precision="fp32")
    rows = [
        '{"id": "x1", "sentence1": "a man plays guitar", "sentence2": "a man plays the guitar"}',
        '{"sentence1": "a cat", "sentence2": "a dog"}',
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(rows) + "\n"))
    main(
        [
            "predict",
            "--checkpoint",
            str(folder),
            "--task",
            "sts",
            "--input",
            "-",
            "--format",
            "jsonl",
            "--precision",
            "fp32",
        ]
    )
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = model.similarity([("a man plays guitar", "a man plays the guitar"), ("a cat", "a dog")])
    assert [o["id"] for o in out] == ["x1", "2"] and out[1]["sentence2"] == "a dog"
    assert [o["similarity"] for o in out] == pytest.approx(expected)

    monkeypatch.setattr("sys.stdin", io.StringIO("a good movie\n\nan awful, boring film\n"))
    main(
        [
            "predict",
            "--checkpoint",
            str(folder),
            "--task",
            "sst",
            "--input",
            "-",
            "--format",
            "csv",
            "--precision",
            "fp32",
        ]
    )
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    expected = model.sentiment(["a good movie", "an awful, boring film"])
    assert list(table[0]) == ["id", "sentence", "label", "name", "p0", "p1", "p2", "p3", "p4"]
    assert [r["id"] for r in table] == ["1", "3"] and table[1]["sentence"] == "an awful, boring film"
    assert [int(r["label"]) for r in table] == [r.label for r in expected]
    assert [float(table[0][f"p{y}"]) for y in range(5)] == pytest.approx(expected[0].probabilities)

    out_file = Path(cfg.save_dir) / "para.jsonl"
    monkeypatch.setattr("sys.stdin", io.StringIO("what is ai?\twhat is artificial intelligence?\n"))
    main(
        [
            "predict",
            "--checkpoint",
            str(folder),
            "--task",
            "para",
            "--input",
            "-",
            "--format",
            "jsonl",
            "--output",
            str(out_file),
        ]
    )
    (row,) = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert set(row) == {"id", "sentence1", "sentence2", "probability", "label"}


def test_bad_json_lines_name_the_line() -> None:
    with pytest.raises(MtbertError, match=r"stdin:2: not a JSON object"):
        read_rows('{"sentence": "fine"}\n{"sentence": \n', "sst", "stdin")
    with pytest.raises(MtbertError, match=r'in.jsonl:1: needs a string "sentence2"'):
        read_rows('{"sentence1": "a"}\n', "sts", "in.jsonl")
    with pytest.raises(MtbertError, match="no sentences"):
        read_rows("\n \n", "sst", "stdin")
    assert read_rows('{"text": "ok"}\n', "sst", "s") == (["1"], [["ok"]])
