"""torchrun: two gloo processes on CPU train to the same parameters as one process with the same global batch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtbert.config import Config
from mtbert.train.checkpoint import load_training_state
from mtbert.train.distributed import Distributed

from .conftest import CHILD, run_child, run_paths


def test_shards_are_disjoint_and_cover_the_batch() -> None:
    rows = {"sst": np.arange(5), "sts": np.arange(1)}
    (a, wa), (b, wb) = [Distributed(r, 2, torch.device("cpu")).shard(rows) for r in range(2)]
    assert sorted(a["sst"].tolist() + b["sst"].tolist()) == list(range(5))
    assert (wa["sst"], wb["sst"]) == (6 / 5, 4 / 5)  # DDP's mean of the weighted means is the batch mean
    assert (wa["sts"], wb["sts"]) == (2.0, 0.0)  # a one-row batch counts on rank 0 only; rank 1 computes it idly
    assert Distributed(0, 1, torch.device("cpu")).shard(rows)[1] == {"sst": 1.0, "sts": 1.0}


def torchrun(cfg: Config, **env_vars: str) -> list[dict]:
    """Runs train(cfg) in 2 gloo processes; returns what each printed."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(CHILD)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_vars}
    done = subprocess.run([*argv, json.dumps(cfg.settings())], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("surgery", ["none", "pcgrad"])
def test_two_processes_equal_one_process(tmp_path: Path, toy_data: Path, tiny_checkpoint: Path, surgery: str):
    """(--grad_surgery pcgrad: each task's gradient averaged over the processes before the projection.)"""
    # no dropout anywhere (ranks draw different masks): the checkpoint's attention dropout off too
    model = tmp_path / "tiny-bert-no-dropout"
    shutil.copytree(tiny_checkpoint, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "attention_probs_dropout_prob": 0.0}))
    # 3 steps of global batch 4, 4 and 1: the last leaves rank 1 without rows, so its share weighting is tested
    cfg = Config.from_settings(
        dict(
            model=str(model),
            data_dir=str(toy_data),
            epochs=1,
            samples_per_epoch=9,
            batch_size=4,
            lr=3e-3,
            scheduler="none",
            hidden_dropout_prob=0.0,
            precision="fp32",  # bf16 rounds each split its own way
            grad_surgery=surgery,
            resume=str(tmp_path / "one-state"),
            **run_paths(tmp_path / "one"),
        )
    )
    one = run_child(cfg)
    assert one.returncode == 0, one.stderr

    two = cfg.updated(resume=str(tmp_path / "two-state"), **run_paths(tmp_path / "two"))
    outputs = torchrun(two)
    assert sorted(len(o["history"]) for o in outputs) == [0, 1]  # only rank 0 evaluates and reports
    assert outputs[0]["best"] == outputs[1]["best"]

    a, b = load_training_state(cfg.resume), load_training_state(two.resume)
    assert a["run"]["step"] == b["run"]["step"] == 3
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, atol=1e-5, rtol=0, msg=name)
    assert (tmp_path / "two" / "sst-test-output.csv").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sophiag", "sophiah"])
def test_sophia_trains_under_torchrun(tmp_path: Path, toy_data: Path, tiny_checkpoint: Path, optimizer: str):
    """The Hessian estimates are averaged over the ranks (a Hutchinson or GNB draw per rank, so not equal to one
    process's); the run completes and its Hessian state is finite and positive somewhere."""
    cfg = Config.from_settings(
        dict(
            model=str(tiny_checkpoint),
            data_dir=str(toy_data),
            epochs=1,
            samples_per_epoch=9,
            batch_size=4,
            lr=3e-3,
            optimizer=optimizer,
            hess_interval=2,
            resume=str(tmp_path / "state"),
            **run_paths(tmp_path),
        )
    )
    printed = torchrun(cfg, MTBERT_CHILD_HESSIANS="1")
    outputs = [p for p in printed if "best" in p]
    assert len(outputs) == 2 and outputs[0]["best"] == outputs[1]["best"]
    hessians = [s["hessian"] for s in load_training_state(cfg.resume)["optimizer"]["state"].values()]
    assert all(torch.isfinite(h).all() for h in hessians) and any((h > 0).any() for h in hessians)
    # averaged over the ranks: each rank drew its own estimate on its own rows, yet both hold the same Hessian
    ranks = {p["rank"]: p["hessian_sums"] for p in printed if "rank" in p}
    assert sorted(ranks) == [0, 1] and ranks[0] == ranks[1] and any(s > 0 for s in ranks[0])
    saved = [float(h.double().sum()) for h in hessians]
    assert saved == pytest.approx(ranks[0], rel=1e-6)


@pytest.mark.slow
def test_tags_train_under_torchrun_and_resume(tmp_path: Path, toy_data: Path, tiny_checkpoint: Path):
    """--additional_input in 2 gloo processes (both tag through the same cache) with --resume: the saved state holds
    the tag embeddings, and a second run of the same command finds the run complete."""
    cfg = Config.from_settings(
        dict(
            model=str(tiny_checkpoint),
            data_dir=str(toy_data),
            epochs=2,
            samples_per_epoch=8,
            batch_size=4,
            lr=3e-3,
            scheduler="none",
            precision="fp32",
            additional_input=True,
            tag_cache=str(tmp_path / "tags"),
            resume=str(tmp_path / "state"),
            **run_paths(tmp_path / "out"),
        )
    )
    outputs = torchrun(cfg)
    assert outputs[0]["best"] == outputs[1]["best"] and outputs[0]["best"]["epoch"] in (1, 2)
    state = load_training_state(cfg.resume)
    assert state["run"]["epoch"] == 2 and state["model"]["tags.pos.weight"].abs().sum() > 0
    again = torchrun(cfg)  # the same command again: nothing left to train
    assert [o["history"] for o in again] == [[], []] and again[0]["best"] == outputs[0]["best"]


@pytest.mark.slow
def test_unfreezing_and_a_hard_gated_mixture_train_under_torchrun(
    tmp_path: Path, toy_data: Path, tiny_checkpoint: Path
) -> None:
    """DDP is rebuilt as layers join (it reduces what trained when it was built), and a hard gate's experts may get
    no sentence on a rank (unused parameters): two processes end with one process's weights."""
    model = tmp_path / "tiny-bert-no-dropout"
    shutil.copytree(tiny_checkpoint, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "attention_probs_dropout_prob": 0.0}))
    cfg = Config.from_settings(
        dict(
            model=str(model),
            data_dir=str(toy_data),
            epochs=3,
            samples_per_epoch=8,
            batch_size=4,
            lr=3e-3,
            scheduler="none",
            hidden_dropout_prob=0.0,
            precision="fp32",
            unfreeze_interval=1,
            moe=True,
            moe_experts=2,
            moe_gate="hard",
            resume=str(tmp_path / "one-state"),
            **run_paths(tmp_path / "one"),
        )
    )
    one = run_child(cfg)
    assert one.returncode == 0, one.stderr
    two = cfg.updated(resume=str(tmp_path / "two-state"), **run_paths(tmp_path / "two"))
    outputs = torchrun(two)
    assert outputs[0]["best"] == outputs[1]["best"]
    history = max((o["history"] for o in outputs), key=len)  # rank 0's
    assert sum(history[-1][f"expert_{k}_share"] for k in range(2)) == pytest.approx(1)
    a, b = load_training_state(cfg.resume), load_training_state(two.resume)
    assert a["run"]["step"] == b["run"]["step"] == 6
    for name, value in a["model"].items():  # (Adam amplifies rounding where gradients are ~0: 1e-4 apart; a layer
        # whose gradients DDP did not reduce is 1e-2 apart)
        torch.testing.assert_close(b["model"][name], value, atol=1e-3, rtol=0, msg=name)
