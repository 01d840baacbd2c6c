"""Bad input and faults: one line naming the flag, file or line (exit 2), no traceback, nothing written; a
diverging run stops with its best model intact; saves survive a kill; two runs never share their outputs."""

import errno
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import mtbert.train.step
from mtbert.cli import main
from mtbert.config import Config
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.inference.saved import load_model, save_model
from mtbert.outputs import Lock
from mtbert.train.checkpoint import load_training_state
from mtbert.train.setup import setup_model

from .conftest import REPO, write_csv


def files_under(folder: Path) -> dict[str, tuple]:
    """Every path below `folder`, folders and lock files included, a file with its size and modification time: a
    path created or removed, or a file written, changes it."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "folder"
        for p in folder.rglob("*")
    }


def train_args(cfg: Config) -> list[str]:
    """`mtbert train` flags for `cfg`'s settings."""
    flags = ["train"]
    for key, value in cfg.settings().items():
        if value is None or value == getattr(Config, key, None):
            continue
        flags += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return flags


# case -> (how to change the set-up, extra command-line words, words of the one-line message)
BAD = {
    "lr inf": (None, ["--lr", "inf"], "--lr must be a finite number, got inf"),
    "lr nan": (None, ["--lr", "nan"], "--lr must be a finite number, got nan"),
    "head_lr nan": (None, ["--head_lr", "nan"], "--head_lr must be a finite number"),
    "sts weight nan": (None, ["--sts_loss_weight", "nan"], "--sts_loss_weight must be a finite number"),
    "config is a folder": (None, ["--config", "{tmp}"], "--config {tmp}: is a folder"),
    "config value inf": ("config", ["--config", "{tmp}/run.yaml"], "--head_lr must be a finite number"),
    "resume is a file": ("file", ["--resume", "{tmp}/a-file"], "--resume {tmp}/a-file: {tmp}/a-file is a file"),
    "save_dir under a file": ("file", ["--save_dir", "{tmp}/a-file/models"], "--save_dir {tmp}/a-file/models"),
    "prediction under a file": ("file", ["--sts_test_out", "{tmp}/a-file/sts.csv"], "--sts_test_out"),
    "prediction is a folder": (None, ["--sst_dev_out", "{tmp}"], "--sst_dev_out {tmp}: is a folder"),
    "train file is a folder": (None, ["--sts_train", "{tmp}"], "{tmp}: is a folder, expected a CSV file"),
    "unbalanced quote": ("quote", [], "sts-train.csv:3: a quoted field opens here and runs to line 7"),
    "quotes merging rows": ("quotes", [], "sts-train.csv:2: a quoted field opens here and runs to line 4"),
}


def set_up(case: str | None, tmp: Path, data: Path) -> None:
    if case == "file":
        (tmp / "a-file").write_text("not a folder\n")
    elif case == "config":
        (tmp / "run.yaml").write_text("head_lr: .inf\n")
    elif case in ("quote", "quotes"):
        lines = (data / "sts-train.csv").read_text().splitlines()
        if case == "quote":  # one quote that never closes, opening on line 3 of 7
            lines[2] = lines[2].replace("\ta ", '\t"a ', 1)
        else:  # a sentence that starts with a quote, and a later one that ends with one
            lines[1] = lines[1].replace("\ta ", '\t"a ', 1)
            lines[3] = lines[3].replace("\t3.9", '"\t3.9')
        (data / "sts-train.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_stops_with_one_line_before_anything_is_written(
    case: str, cfg: Config, tmp_path: Path, capsys
) -> None:
    setup, extra, words = BAD[case]
    tmp = tmp_path / "bad"
    tmp.mkdir()
    set_up(setup, tmp, Path(cfg.data_dir))
    before = files_under(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(train_args(cfg) + [w.format(tmp=tmp) for w in extra])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert words.format(tmp=tmp) in err, err
    assert sum("error:" in line for line in err.splitlines()) == 1 and "Traceback" not in err  # (and a usage)
    assert files_under(tmp_path) == before, "nothing is written"


def test_sts_quote_cases_hold_what_they_claim(cfg: Config, tmp_path: Path) -> None:
    """The quote cases above really are what they say: without the check, the quotes would merge rows."""
    import csv

    for case, merged in (("quote", 4), ("quotes", 2)):
        data = tmp_path / case
        data.mkdir()
        (data / "sts-train.csv").write_text((Path(cfg.data_dir) / "sts-train.csv").read_text())
        set_up(case, tmp_path, data)
        with open(data / "sts-train.csv", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        assert len(rows) == 7 - merged, (case, rows)


def test_a_field_of_any_length_is_read(cfg: Config) -> None:
    long_sentence = "a man plays the guitar " * 10_000  # 230,000 characters, over csv's default field limit
    path = Path(cfg.data_dir) / "sts-train.csv"
    lines = path.read_text().splitlines()
    lines[1] = "\t".join(["0", "t0", long_sentence, "a man plays guitar", "4.8"])
    path.write_text("\n".join(lines) + "\n")
    best = fit(replace(cfg, epochs=1, sts=True))
    assert best["epoch"] == 1 and math.isfinite(best["sts/pearson"])


@pytest.mark.parametrize("command", ["predict", "encode"])
def test_input_and_output_paths_of_predict_and_encode(
    command: str, cfg: Config, tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    fit(replace(cfg, epochs=1))
    model = str(Path(cfg.save_dir) / "finetune-1-0.003-adamw-none-multitask")
    (tmp_path / "a-file").write_text("x\n")
    lead = ["predict", "--checkpoint", model, "--task", "sst"] if command == "predict" else ["encode"]
    if command == "encode":
        lead += ["--model", str(tiny_checkpoint)]
    cases = [(["--input", str(tmp_path)], f"--input {tmp_path}: is a folder")]
    if command == "predict":
        cases += [
            (["--input", str(tmp_path / "a-file"), "--output", str(tmp_path)], f"--output {tmp_path}: is a folder"),
            (["--input", str(tmp_path / "a-file"), "--output", str(tmp_path / "a-file" / "p.csv")], "is a file"),
        ]
    for args, words in cases:
        with pytest.raises(SystemExit) as e:
            main(lead + args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err and "Traceback" not in err, err


def test_a_full_disk_is_one_line(cfg: Config, tmp_path: Path, capsys, monkeypatch) -> None:
    fit(replace(cfg, epochs=1))
    model = str(Path(cfg.save_dir) / "finetune-1-0.003-adamw-none-multitask")
    (tmp_path / "in.txt").write_text("a good movie\n")
    capsys.readouterr()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.csv"))

    monkeypatch.setattr("mtbert.outputs.tempfile.mkstemp", full)
    with pytest.raises(SystemExit) as e:
        main(
            [
                "predict",
                "--checkpoint",
                model,
                "--task",
                "sst",
                "--input",
                str(tmp_path / "in.txt"),
                "--output",
                str(tmp_path / "out.csv"),
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.strip() == f"error: {tmp_path / 'out.csv'}: No space left on device"


@pytest.mark.slow
def test_a_closed_stdout_ends_quietly(tiny_checkpoint: Path, tmp_path: Path) -> None:
    sentences = tmp_path / "many.txt"
    sentences.write_text("a good movie\n" * 2000)  # far more output than a pipe holds
    done = subprocess.run(
        f"{sys.executable} -m mtbert encode --model {tiny_checkpoint} --input {sentences} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        executable="/bin/bash",
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert done.stdout.count("\n") == 1 and len(json.loads(done.stdout)) == 32
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_each_subcommand_reports_flag_errors_with_its_own_usage(capsys) -> None:
    for argv, usage in (
        (["train", "--bogus"], "usage: mtbert train"),
        (["encode", "--bogus"], "usage: mtbert encode"),
        (["train", "--rho", "0.1"], "usage: mtbert train"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and usage in err, err


def test_evaluate_on_test_files_needs_labelled_ones(cfg: Config, capsys) -> None:
    fit(replace(cfg, epochs=1))
    model = str(Path(cfg.save_dir) / "finetune-1-0.003-adamw-none-multitask")
    args = ["evaluate", "--checkpoint", model, "--data_dir", cfg.data_dir, "--split", "test", "--precision", "fp32"]
    with pytest.raises(SystemExit) as e:  # the course's test files have no labels
        main(args)
    assert e.value.code == 2 and "give labelled ones with --sst_test" in capsys.readouterr().err
    labelled = {
        f"--{t}_test": str(Path(cfg.data_dir) / f)
        for t, f in (("sst", "ids-sst-dev.csv"), ("para", "quora-dev.csv"), ("sts", "sts-dev.csv"))
    }
    main(args + [word for pair in labelled.items() for word in pair])
    assert set(json.loads(capsys.readouterr().out)) == {"sst/accuracy", "para/accuracy", "sts/pearson", "mean"}


def test_a_finished_resume_run_says_so_and_writes_nothing(cfg: Config, tmp_path: Path, caplog) -> None:
    run = replace(cfg, epochs=2, resume=str(tmp_path / "state"))
    first = fit(run)
    before = files_under(tmp_path)
    caplog.clear()
    with caplog.at_level("INFO"):
        again = fit(run)
    assert again == first
    assert "this run is complete (2 epochs); nothing to do" in caplog.text and "best epoch" not in caplog.text
    assert files_under(tmp_path) == before


def poison(monkeypatch, at_step: int) -> None:
    """From the `at_step`-th training step on, every loss is nan."""
    calls, compute_losses = [0], mtbert.train.step.compute_losses

    def nan_losses(*args, **kwargs):
        calls[0] += 1
        losses, outputs = compute_losses(*args, **kwargs)
        if calls[0] >= at_step:
            losses = {t: v * math.nan for t, v in losses.items()}
        return losses, outputs

    monkeypatch.setattr(mtbert.train.step, "compute_losses", nan_losses)


def test_a_loss_that_becomes_nan_stops_the_run_and_keeps_the_best_model(
    cfg: Config, tmp_path: Path, monkeypatch
) -> None:
    run = replace(cfg, epochs=4, resume=str(tmp_path / "state"))  # one step per epoch
    poison(monkeypatch, at_step=3)
    diverged = r"training diverged by step 3 \(loss epoch nan, sst nan, para nan, sts nan\).*best model so far"
    with pytest.raises(MtbertError, match=diverged):
        fit(run)
    model, _, meta = load_model(Path(cfg.save_dir) / "finetune-4-0.003-adamw-none-multitask")
    assert meta["dev_metrics"]["epoch"] <= 2 and all(torch.isfinite(p).all() for p in model.parameters())
    state = load_training_state(run.resume)
    assert state["run"]["epoch"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_a_nan_learning_rate_of_a_config_file_stops_before_training(cfg: Config, tmp_path: Path, capsys) -> None:
    (tmp_path / "nan.json").write_text('{"head_lr": NaN}')
    with pytest.raises(SystemExit) as e:
        main(train_args(cfg) + ["--config", str(tmp_path / "nan.json")])
    assert e.value.code == 2 and "--head_lr must be a finite number, got nan" in capsys.readouterr().err
    assert not Path(cfg.save_dir).exists()


def test_saves_clear_stale_temp_files_recover_the_previous_model_and_keep_the_umask(cfg: Config, tmp_path) -> None:
    model, tokenizer = setup_model(cfg)
    folder = tmp_path / "models" / "best"
    (folder.parent).mkdir()
    stale = folder.parent / ".best.tmp-abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    save_model(folder, model, tokenizer, {"dev_metrics": {"mean": 0.1}})
    assert sorted(p.name for p in folder.parent.iterdir()) == ["best"]
    mask = os.umask(0)
    os.umask(mask)
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
    assert folder.stat().st_mode & 0o777 == 0o777 & ~mask
    os.replace(folder, folder.with_name(".best.old"))  # a crash between the swap's two renames
    _, _, meta = load_model(folder)
    assert meta["dev_metrics"]["mean"] == 0.1 and folder.is_dir()


SAVE_LOOP = """
import sys
import torch
from mtbert.config import Config
from mtbert.inference.saved import save_model
from mtbert.train.setup import setup_model
torch.manual_seed(0)  # the test's own model: the same heads
model, tokenizer = setup_model(Config(model=sys.argv[1]))
print("ready", flush=True)
n = 0
while True:
    n += 1
    save_model(sys.argv[2], model, tokenizer, {"dev_metrics": {"mean": n}})
"""


@pytest.mark.slow
def test_a_kill_during_saves_always_leaves_a_loadable_model(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """SIGKILL at random points of a loop of saves: the model folder (or the previous one) always loads, and the
    next save leaves no temporary file."""
    folder = tmp_path / "models" / "best"
    torch.manual_seed(0)  # the saving loop's model: the same heads
    model, tokenizer = setup_model(Config(model=str(tiny_checkpoint)))
    save_model(folder, model, tokenizer, {"dev_metrics": {"mean": 0}})
    rng = random.Random(0)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    in_window = 0  # kills that left a half-done save behind (its temporary folder, or the previous model aside)
    for _ in range(12):
        child = subprocess.Popen(
            [sys.executable, "-c", SAVE_LOOP, str(tiny_checkpoint), str(folder)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.5))
        child.send_signal(signal.SIGKILL)
        child.wait()
        in_window += any(p.name != "best" for p in folder.parent.iterdir())
        loaded, _, meta = load_model(folder)
        assert meta["dev_metrics"]["mean"] >= 0
        assert all(torch.equal(t, saved[k]) for k, t in loaded.state_dict().items())  # the weights, whole
    assert in_window >= 1, "no kill landed inside a save: the test proved nothing"
    save_model(folder, model, tokenizer, {"dev_metrics": {"mean": 0}})
    assert sorted(p.name for p in folder.parent.iterdir()) == ["best"]


HOLD_LOCK = """
import sys, time
from mtbert.outputs import Lock
Lock("--save_dir", sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_lock_names_the_run_that_holds_it_and_a_dead_runs_lock_is_taken_over(tmp_path: Path) -> None:
    target = tmp_path / "models" / "best"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(target)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MtbertError, match=rf"--save_dir {target}: in use by another run \(pid {holder.pid}, "):
            Lock("--save_dir", target).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = Lock("--save_dir", target)  # the holder is dead: its lock is free
    lock.acquire()
    lock.release()


@pytest.mark.slow
def test_two_runs_on_the_same_folders_one_trains_the_other_stops_at_once(cfg: Config, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "mtbert", *train_args(replace(cfg, epochs=40, samples_per_epoch=16, batch_size=4))]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lock = Path(cfg.save_dir) / ".finetune-40-0.003-adamw-none-multitask.lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    started = time.monotonic()
    second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 2 and f"in use by another run (pid {first.pid}" in second.stderr, second.stderr
    assert time.monotonic() - started < 30  # at once: before reading data or training
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert "best: epoch" in out


def test_quotes_written_csv_style_still_read(tmp_path: Path) -> None:
    """Quotes written CSV-style still read as before (the course files use them)."""
    path = write_csv(
        tmp_path / "sts.csv",
        ["id", "sentence1", "sentence2", "similarity"],
        [("t0", '"""a quoted"" sentence"', "b", 1.0), ("t1", "c", "d", 2.0)],
    )
    from mtbert.data.files import read_examples
    from mtbert.model.tasks import TASKS

    spec = TASKS["sts"]
    examples = read_examples(path, spec.text_columns, spec.label_column, spec.parse_label, True)
    assert examples.texts[0] == ['"a quoted" sentence', "c"]
