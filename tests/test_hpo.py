"""Hyper-parameter search (mtbert.lab): the space and its checks, and real searches on Ray Tune with a tiny model."""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mtbert.cli import main
from mtbert.config import Config, Search
from mtbert.errors import MtbertError
from mtbert.lab.hpo import check_same_search, trial_base
from mtbert.lab.runs import run_config
from mtbert.lab.space import check_space, default_space, read_space, to_tune

RAY_NOISE = (
    "View detailed results",
    "Configuration for experiment",
    "usage stats",
    "Usage stats",
    "dashboard",
    "To visualize",
    "Started a local Ray",
    "Trial status",
)


def test_default_space_fits_each_optimizer_and_the_active_tasks() -> None:
    adamw, sophia = Config(), Config(optimizer="sophiah", sts=True)
    for cfg in (adamw, sophia):
        check_space(default_space(cfg), cfg, where="default")
    assert default_space(adamw)["scheduler"] == ("choice", ["plateau", "cosine"])
    assert "rho" not in default_space(adamw) and {"rho", "hess_interval"} <= set(default_space(sophia))
    assert {k for k in default_space(sophia) if k.endswith("_loss_weight")} == {"sts_loss_weight"}


def space_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_a_space_file_replaces_the_default(tmp_path: Path) -> None:
    path = space_file(tmp_path, "lr: {loguniform: [1e-5, 1e-3]}\nbatch_size: {choice: [8, 16]}\n")
    space = read_space(path, Config())
    assert space == {"lr": ("loguniform", [1e-5, 1e-3]), "batch_size": ("choice", [8, 16])}  # 1e-5: YAML's string
    domains = to_tune({"hess_interval": ("int", [5, 6])})
    assert (domains["hess_interval"].lower, domains["hess_interval"].upper) == (5, 7)  # both ends included


@pytest.mark.parametrize(
    "text, message",
    [
        ("lrr: {uniform: [0.1, 0.2]}", "lrr: not a setting"),
        ("lr: [1e-5, 1e-3]", "lr: expected one of uniform, loguniform, int, choice"),
        ("lr: {normal: [0, 1]}", "lr: expected one of"),
        ("batch_size: {uniform: [8, 64]}", "batch_size: uniform takes \\[low, high\\] of a setting of float values"),
        ("lr: {int: [1, 3]}", "lr: int takes"),
        ("lr: {loguniform: [0, 1e-3]}", "lr: loguniform needs low > 0"),
        ("lr: {uniform: [1e-3, 1e-5]}", "low < high"),
        ("batch_size: {choice: [16, 32.5]}", "the choice 32.5 is not a value of --batch_size"),
        ("optimizer: {choice: [adamw, sgd]}", "the choice 'sgd' is not a value of --optimizer"),
        ("rho: {loguniform: [0.01, 0.1]}", "rho: 0.01 does not fit the other settings: --rho is a Sophia setting"),
        ("batch_size: {choice: [0, 16]}", "--batch_size must be at least 1"),
        ("save_dir: {choice: [a, b]}", "save_dir: a setting of the search or of where each trial writes"),
        ("hpo_trials: {int: [1, 4]}", "hpo_trials: a setting of the search"),
        ("{}", "an empty search space"),
    ],
)
def test_space_file_errors_name_the_file_and_the_setting(tmp_path: Path, text: str, message: str) -> None:
    path = space_file(tmp_path, text)
    with pytest.raises(MtbertError, match=f"{re.escape(str(path))}: .*{message}|{message}"):
        read_space(path, Config())


def test_search_settings_need_hpo_and_a_search_resumes_itself(capsys) -> None:
    with pytest.raises(ValueError, match="--hpo_trials, --hpo_dir: settings of a search; add --hpo"):
        Search(hpo_trials=4, hpo_dir="x")
    with pytest.raises(SystemExit) as e:
        main(["train", "--hpo", "--resume", "state"])
    assert e.value.code == 2 and "--hpo with --resume" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--hpo_cpus_per_trial must be above 0"):
        Search(hpo=True, hpo_cpus_per_trial=0)
    assert Search(hpo=True).gpus_per_trial(use_gpu=True) == 1 and Search(hpo=True).gpus_per_trial(False) == 0


def test_without_the_hpo_extra_tune_says_what_to_install(monkeypatch, capsys, toy_data: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as without the extra
    with pytest.raises(SystemExit) as e:
        main(["tune", "--data_dir", str(toy_data), "--hpo_trials", "2"])  # tune: search flags without --hpo
    assert e.value.code == 2
    assert "pip install 'mtbert[hpo]'" in capsys.readouterr().err


def test_trials_share_the_settings_and_write_in_their_own_folders(tmp_path: Path, toy_data: Path) -> None:
    base = trial_base(Config(data_dir=os.path.relpath(toy_data), epochs=2))
    assert Path(base.data_dir).is_absolute()
    cfg = run_config(base, {"lr": 1e-3, "batch_size": 4}, tmp_path / "t1")
    assert (cfg.lr, cfg.batch_size, cfg.epochs) == (1e-3, 4, 2)
    written = [
        cfg.save_dir,
        cfg.logdir,
        cfg.resume,
        *(getattr(cfg.per_task[t], f"{s}_out") for t in ("sst", "para", "sts") for s in ("dev", "test")),
    ]
    assert all(Path(p).is_relative_to(tmp_path / "t1") for p in written)
    with pytest.raises(MtbertError, match="--sst_train .*missing.csv"):
        trial_base(Config(data_dir=str(toy_data)).updated(sst_train=str(toy_data / "missing.csv")))


def test_a_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    space = {"lr": ("loguniform", [1e-5, 1e-3])}
    check_same_search(tmp_path, Config(epochs=3), space, trials=4)
    check_same_search(tmp_path, Config(epochs=3), space, trials=4)  # the same search: resumed
    with pytest.raises(MtbertError, match=r"other settings \(--epochs 3 -> 4; --hpo_trials 4 -> 5\)"):
        check_same_search(tmp_path, Config(epochs=4), space, trials=5)


# --- real searches: a local Ray instance (or a cluster started here), the tiny model, the toy files


def tune_command(tiny_checkpoint: Path, toy_data: Path, hpo_dir: Path, trials: int, epochs: int, *extra: str) -> list:
    space = hpo_dir.parent / "space.yaml"
    space.write_text("lr: {loguniform: [1e-4, 3e-2]}\nbatch_size: {choice: [2, 4]}\n")
    return [
        sys.executable,
        "-m",
        "mtbert",
        "tune",
        "--model",
        str(tiny_checkpoint),
        "--data_dir",
        str(toy_data),
        "--epochs",
        str(epochs),
        "--samples_per_epoch",
        "8",
        "--hpo_trials",
        str(trials),
        "--hpo_space",
        str(space),
        "--hpo_dir",
        str(hpo_dir),
        *extra,
    ]


def read_table(hpo_dir: Path) -> list[dict]:
    with open(hpo_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_search_stops_trials_early_and_its_best_command_trains(
    tiny_checkpoint: Path, toy_data: Path, tmp_path: Path, monkeypatch
) -> None:
    hpo_dir = tmp_path / "hpo"
    run = subprocess.run(
        tune_command(tiny_checkpoint, toy_data, hpo_dir, trials=4, epochs=3),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    output = run.stdout + run.stderr
    assert not [noise for noise in RAY_NOISE if noise in output], output
    assert len(re.findall(r"trial \w+ done \(\d/4\)", run.stderr)) == 4  # one line per finished trial
    rows = read_table(hpo_dir)
    assert len(rows) == 4 and "sst/accuracy" in rows[0] and "stopped_early" in rows[0]
    assert any(r["stopped_early"] == "True" and int(r["epochs"]) < 3 for r in rows)  # ASHA stopped one
    # ... one that trailed: the metric's direction is the right one (maximised, as the mean dev score is)
    stopped = [float(r["mean"]) for r in rows if r["stopped_early"] == "True"]
    kept = [float(r["mean"]) for r in rows if r["stopped_early"] != "True"]
    assert kept and max(stopped) <= max(kept)
    assert [float(r["mean"]) for r in rows] == sorted((float(r["mean"]) for r in rows), reverse=True)
    assert f"train it again: mtbert train --config {hpo_dir / 'best.yaml'}" in run.stdout
    best = rows[0]["trial"]
    assert (hpo_dir / "trials" / best / "model").is_dir()  # the best model kept, the others deleted
    assert not any((hpo_dir / "trials" / r["trial"] / "model").exists() for r in rows[1:])
    assert not list(hpo_dir.glob("trials/*/state"))
    params = json.loads((hpo_dir / "trials" / best / "params.json").read_text())

    monkeypatch.chdir(tmp_path)  # the best command, run: it trains the best trial's settings again
    history = []
    monkeypatch.setattr("mtbert.cli.format_table", lambda h: history.extend(h) or "")
    main(["train", "--config", str(hpo_dir / "best.yaml"), "--save_dir", str(tmp_path / "again")])
    assert len(history) == 3 and list((tmp_path / "again").iterdir())
    assert history[int(float(rows[0]["best_epoch"])) - 1]["mean"] == pytest.approx(float(rows[0]["mean"]))
    assert params["lr"] == pytest.approx(float(rows[0]["lr"]))


@pytest.mark.slow
def test_a_killed_search_resumes_without_repeating_finished_trials(
    tiny_checkpoint: Path, toy_data: Path, tmp_path: Path
) -> None:
    hpo_dir = tmp_path / "hpo"
    command = tune_command(tiny_checkpoint, toy_data, hpo_dir, trials=4, epochs=3)
    driver = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path)
    first = None
    for line in driver.stderr:
        match = re.search(r"trial (\w+) done \(1/4\)", line)
        if match:
            first = match.group(1)
            break
    time.sleep(3)  # Ray saves the search's state at most 1 s apart (TUNE_GLOBAL_CHECKPOINT_S)
    driver.send_signal(signal.SIGKILL)  # the driver killed, not asked to stop
    driver.wait(timeout=30)
    finished = [first, *re.findall(r"trial (\w+) done", driver.stderr.read())]
    assert first is not None and len(finished) < 4
    histories = {t: hpo_dir / "trials" / t / "history.jsonl" for t in finished}
    before = {t: (h.read_text(), h.stat().st_mtime_ns) for t, h in histories.items()}

    run = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "resuming the search" in run.stderr and f"trial {first} done" not in run.stderr
    assert {t: (h.read_text(), h.stat().st_mtime_ns) for t, h in histories.items()} == before
    assert len(read_table(hpo_dir)) == 4
    for trial in finished:  # no finished trial trained again (one that ended within the last second is rerun by
        # Ray, and its training, saved as complete, returns at once)
        assert (hpo_dir / "trials" / trial / "train.log").read_text().count("epoch 1/3:") == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_search_runs_on_a_ray_cluster_through_ray_address(
    tiny_checkpoint: Path, toy_data: Path, tmp_path: Path
) -> None:
    ray = str(Path(sys.executable).parent / "ray")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    start = [
        ray,
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
        "--block",  # in the foreground, its own process group: stopping it stops this cluster only
    ]
    head = subprocess.Popen(start, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not glob.glob(f"{temp}/session_latest/logs/gcs_server.out"):  # the cluster is up
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head failed"
            time.sleep(0.5)
        hpo_dir = tmp_path / "hpo"
        command = tune_command(tiny_checkpoint, toy_data, hpo_dir, 2, 2, "--ray_address", f"127.0.0.1:{port}")
        driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        out, err = driver.communicate(timeout=180)
        assert driver.returncode == 0, err
        assert len(read_table(hpo_dir)) == 2
        # the search ran as a job of that cluster: its driver's log is in the cluster's session folder
        assert glob.glob(f"{temp}/session_latest/logs/python-core-driver-*_{driver.pid}.log")
    finally:  # the cluster this test started, not every Ray process of the machine (`ray stop` would stop them all)
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


def test_best_settings_file_is_a_config_file(tmp_path: Path) -> None:
    from mtbert.cli import train_parser
    from mtbert.config import config_from_args
    from mtbert.lab.hpo import write_settings

    cfg = Config().updated(lr=3e-4, batch_size=16, data_dir="/data", sts_loss_weight=2.5)
    write_settings(tmp_path / "best.yaml", cfg)
    parser = train_parser()
    assert config_from_args(parser, parser.parse_args(["--config", str(tmp_path / "best.yaml")])) == cfg
