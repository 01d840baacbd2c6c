"""The training loop end to end on a tiny random model and toy CSVs: fitting, reproducibility, saved files."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mtbert.cli import main
from mtbert.config import Config
from mtbert.data.task_data import read_task
from mtbert.data.task_files import split_file
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.inference.evaluate import evaluate
from mtbert.inference.saved import load_model, save_model
from mtbert.train.setup import setup_model

from .conftest import run_paths, toy_config


def dev_metrics(cfg: Config) -> dict[str, float]:
    torch.manual_seed(cfg.seed)
    model, tokenizer = setup_model(cfg)
    return evaluate(
        model, {t: read_task(split_file(cfg, t, "dev"), t, tokenizer) for t in cfg.active_tasks}, cfg.precision
    )[0]


def test_overfits_the_toy_data(cfg: Config) -> None:
    before = dev_metrics(cfg)
    history: list[dict[str, float]] = []
    best = fit(cfg, report=history.append)
    assert len(history) == cfg.epochs
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert best["sst/accuracy"] >= 0.75 > before["sst/accuracy"]
    assert best["para/accuracy"] >= 0.8 and best["sts/pearson"] > max(0.8, before["sts/pearson"])
    assert best["mean"] == max(h["mean"] for h in history)


@pytest.mark.parametrize("optimizer", ["sophiag", "sophiah"])
def test_sophia_trains_all_three_tasks(cfg: Config, optimizer: str) -> None:
    before = dev_metrics(cfg)
    history: list[dict[str, float]] = []
    best = fit(replace(cfg, optimizer=optimizer, lr=1e-3, hess_interval=2), report=history.append)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert best["mean"] > before["mean"] + 0.2
    assert best["para/accuracy"] >= 0.8 and best["sts/pearson"] > max(0.8, before["sts/pearson"])


@pytest.mark.slow
def test_bf16_autocast_trains_and_stays_close_to_fp32(cfg: Config) -> None:
    """--precision bf16 (the default on CUDA) fits the toy data like fp32; its first epoch's loss is fp32's within
    bf16 rounding, and the weights stay float32."""
    fp32, bf16 = [], []
    fit(replace(cfg, epochs=1), report=fp32.append)
    best = fit(replace(cfg, precision="bf16"), report=bf16.append)
    assert abs(bf16[0]["train_loss"] - fp32[0]["train_loss"]) < 0.02 * fp32[0]["train_loss"]
    assert bf16[-1]["train_loss"] < 0.5 * bf16[0]["train_loss"]
    assert best["para/accuracy"] >= 0.8 and best["sts/pearson"] > 0.8
    model, _, _ = load_model(Path(cfg.save_dir) / "finetune-12-0.003-adamw-none-multitask")
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.slow
def test_same_seed_same_numbers(cfg: Config) -> None:
    short = replace(cfg, epochs=2)
    a, b = [], []
    fit(short, report=a.append)
    fit(short, report=b.append)
    strip = [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in a]
    assert strip == [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in b]
    c = []
    fit(replace(short, seed=1), report=c.append)
    assert c[-1]["train_loss"] != a[-1]["train_loss"]


def test_pretrain_option_freezes_the_encoder(cfg: Config) -> None:
    short = replace(cfg, epochs=1, option="pretrain")
    fit(short)
    model, _, _ = load_model(Path(cfg.save_dir) / "pretrain-1-0.003-adamw-none-multitask")
    initial, _ = setup_model(short)
    for name, p in initial.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[name], p, atol=0, rtol=0)


def test_saved_model_predictions_and_cli(cfg: Config, capsys, tmp_path: Path) -> None:
    best = fit(replace(cfg, epochs=3))
    folder = Path(cfg.save_dir) / "finetune-3-0.003-adamw-none-multitask"
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.safetensors",
        "mtbert.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    meta = json.loads((folder / "mtbert.json").read_text())
    assert meta["config"]["lr"] == cfg.lr and meta["dev_metrics"]["mean"] == best["mean"]

    sst_dev = Path(cfg.per_task["sst"].dev_out).read_text().splitlines()
    assert sst_dev[0] == "id \t Predicted_Sentiment " and re.fullmatch(r"s0 , [0-4] ", sst_dev[1])
    assert len(sst_dev) == 9
    assert Path(cfg.per_task["sts"].test_out).read_text().splitlines()[0] == "id \t Predicted_Similiary "
    assert not Path(cfg.per_task["para"].test_out).exists()  # no Quora test file in the toy data

    main(["evaluate", "--checkpoint", str(folder), "--data_dir", cfg.data_dir, "--precision", cfg.precision])
    printed = json.loads(capsys.readouterr().out)
    assert printed == pytest.approx({k: v for k, v in best.items() if k != "epoch"})

    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a man plays guitar\ta man plays the guitar\na cat\ta dog\n")
    main(["predict", "--checkpoint", str(folder), "--task", "sts", "--input", str(pairs)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "id \t Predicted_Similiary " and len(lines) == 3
    assert all(0.0 <= float(line.split(",")[1]) <= 5.0 for line in lines[1:])

    with pytest.raises(SystemExit) as e:
        main(["predict", "--checkpoint", str(folder), "--task", "sst", "--input", str(pairs)])
    assert e.value.code == 2
    assert "pairs.txt:1: expected 1 tab-separated sentence(s), got 2" in capsys.readouterr().err


def test_checkpoint_flag_continues_from_a_saved_model(cfg: Config, tmp_path: Path) -> None:
    first = fit(replace(cfg, epochs=2))
    folder = str(Path(cfg.save_dir) / "finetune-2-0.003-adamw-none-multitask")
    again = dev_metrics(replace(cfg, model=None, checkpoint=folder))
    assert again["mean"] == pytest.approx(first["mean"])
    # a run from it trains those weights: with the learning rates at 0 it saves them unchanged, every one
    frozen = replace(cfg, model=None, checkpoint=folder, epochs=1, lr=0.0, head_lr=0.0, weight_decay=0.0)
    frozen = replace(frozen, save_dir=str(tmp_path / "continued"))
    fit(frozen)
    saved, _, _ = load_model(folder)
    continued, _, meta = load_model(Path(frozen.save_dir) / "finetune-1-0.0-adamw-none-multitask")
    assert meta["config"]["checkpoint"] == folder
    for key, value in saved.state_dict().items():
        assert torch.equal(continued.state_dict()[key], value), key


def test_a_crash_while_saving_keeps_the_previous_model(cfg: Config, tmp_path: Path, monkeypatch) -> None:
    model, tokenizer = setup_model(cfg)
    folder = tmp_path / "models" / "best"
    save_model(folder, model, tokenizer, {"dev_metrics": {"mean": 0.1}})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr("mtbert.inference.saved.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model(folder, model, tokenizer, {"dev_metrics": {"mean": 0.2}})
    _, _, meta = load_model(folder)
    assert meta["dev_metrics"]["mean"] == 0.1
    assert [p.name for p in folder.parent.iterdir()] == ["best"], "no temporary folders are left behind"


def test_damaged_model_folder_is_a_clear_error(cfg: Config, tmp_path: Path) -> None:
    model, tokenizer = setup_model(cfg)
    save_model(tmp_path / "m", model, tokenizer, {})
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(MtbertError, match=r"m/model\.safetensors: cannot read weights"):
        load_model(tmp_path / "m")


@pytest.mark.slow
def test_real_data_short_run_with_packaged_minilm(data_dir: Path, tmp_path: Path) -> None:
    """Two steps on the real files with the packaged MiniLM: the whole pipeline, and STS already near zero-shot."""
    cfg = Config.from_settings(
        dict(
            data_dir=str(data_dir),
            epochs=1,
            samples_per_epoch=32,
            batch_size=16,
            **run_paths(tmp_path),
        )
    )
    best = fit(cfg)
    assert set(best) == {"sst/accuracy", "para/accuracy", "sts/pearson", "mean", "epoch"}
    assert best["sts/pearson"] > 0.8 and best["para/accuracy"] > 0.6
    assert len(Path(cfg.per_task["sst"].test_out).read_text().splitlines()) == 2211


def test_smoketest_trains_one_short_epoch_and_writes_all_six_prediction_files(cfg: Config) -> None:
    history: list[dict[str, float]] = []
    fit(replace(cfg, smoketest=True, tensorboard_subfolder="smoke"), report=history.append)
    assert len(history) == 1  # one epoch, whatever --epochs says
    folder = Path(cfg.save_dir) / "finetune-1-0.003-adamw-none-multitask"
    assert (folder / "mtbert.json").is_file()
    assert json.loads((folder / "mtbert.json").read_text())["config"]["batch_size"] == 8
    for t in ("sst", "para", "sts"):
        for split in ("dev", "test"):
            assert Path(getattr(cfg.per_task[t], f"{split}_out")).is_file(), (t, split)
    # the toy data has no Quora test file: its test predictions are of the dev rows
    assert len(Path(cfg.per_task["para"].test_out).read_text().splitlines()) == 1 + 6
    assert (
        Path(cfg.per_task["sts"].test_out).read_bytes().startswith(b"id \t Predicted_Similiary \n")
    )  # the original's header
    assert [p.name for p in (Path(cfg.logdir) / "smoke").iterdir()][0].startswith("finetune-1-0.003-adamw-none")


def test_smoketest_scores_only_the_first_dev_rows(tmp_path: Path, toy_data: Path, tiny_checkpoint: Path) -> None:
    lines = (toy_data / "ids-sst-dev.csv").read_text().splitlines()
    (toy_data / "ids-sst-dev.csv").write_text("\n".join(lines[:1] + lines[1:] * 6) + "\n")  # 48 rows
    cfg = toy_config(tmp_path, toy_data, tiny_checkpoint, smoketest=True, sst=True)
    fit(cfg)
    assert len(Path(cfg.per_task["sst"].dev_out).read_text().splitlines()) == 1 + 32


def test_evaluate_scores_the_files_its_flags_name(cfg: Config, capsys, tmp_path: Path) -> None:
    fit(replace(cfg, epochs=1))
    folder = str(Path(cfg.save_dir) / "finetune-1-0.003-adamw-none-multitask")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sts = elsewhere / "my-sts.csv"
    sts.write_text((Path(cfg.data_dir) / "sts-dev.csv").read_text())
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["evaluate", "--checkpoint", folder, "--data_dir", str(empty), "--precision", "fp32"]
    with pytest.raises(SystemExit) as e:  # no files in --data_dir
        main(args)
    assert e.value.code == 2 and "empty/ids-sst-dev.csv: no such file" in capsys.readouterr().err
    main(
        [
            *args,
            "--sst_dev",
            str(Path(cfg.data_dir) / "ids-sst-dev.csv"),
            "--para_dev",
            str(Path(cfg.data_dir) / "quora-dev.csv"),
            "--sts_dev",
            str(sts),
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"sst/accuracy", "para/accuracy", "sts/pearson", "mean"}
