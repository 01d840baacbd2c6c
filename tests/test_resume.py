"""--resume: a run killed mid-epoch continues to exactly the numbers of an uninterrupted run; states are atomic."""

import json
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import mtbert.train.checkpoint
from mtbert.config import Config
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.train.checkpoint import check_resumable, load_training_state, save_training_state

from .conftest import run_child, run_paths


@pytest.mark.slow
@pytest.mark.parametrize(
    "features",
    [
        {},
        {"unfreeze_interval": 1, "moe": True, "moe_experts": 2, "moe_gate": "hard", "optimizer": "sophiah"},
        {"grad_surgery": "pcgrad", "smart": 1.0, "smart_eps": 1e-3, "task_sampling": "annealed", "ema": 0.9},
    ],
    ids=["plain", "unfreezing-moe-sophiah", "pcgrad-smart-annealed-ema"],
)
def test_killed_run_resumes_to_the_same_parameters_and_metrics(
    resume_cfg: Config, tmp_path: Path, features: dict
) -> None:
    """Killed mid-epoch 2 (with unfreezing: after layer 1 joined, before the embeddings do)."""
    resume_cfg = replace(resume_cfg, **features)
    whole = resume_cfg.updated(resume=str(tmp_path / "whole-state"), **run_paths(tmp_path / "whole"))
    done = run_child(whole)
    assert done.returncode == 0, done.stderr
    expected = json.loads(done.stdout.splitlines()[-1])

    killed = run_child(
        resume_cfg, kill_at=8
    )  # batch 8 is epoch 2's last; the state of step 6 (--save_every 3) is on disk
    assert killed.returncode == -signal.SIGKILL
    state = load_training_state(resume_cfg.resume)
    assert (state["run"]["epoch"], state["run"]["batch"], state["run"]["step"]) == (1, 2, 6)

    resumed = run_child(resume_cfg)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    result = json.loads(resumed.stdout.splitlines()[-1])
    drop_seconds = [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in expected["history"]]
    assert [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in result["history"]] == drop_seconds[1:]
    assert result["best"] == expected["best"]
    final, reference = load_training_state(resume_cfg.resume), load_training_state(whole.resume)
    assert final["run"]["step"] == reference["run"]["step"] == 12
    for name, value in reference["model"].items():
        assert torch.equal(final["model"][name], value), name
    for a, b in zip(final["optimizer"]["state"].values(), reference["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_crash_while_writing_the_state_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    save_training_state(tmp_path, {"run": {"step": 1}, "w": torch.ones(3)})

    def dying_save(obj, f) -> None:
        f.write(b"half a state")
        raise KeyboardInterrupt  # the process is stopped in the middle of writing

    monkeypatch.setattr(mtbert.train.checkpoint.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_training_state(tmp_path, {"run": {"step": 2}, "w": torch.zeros(3)})
    state = load_training_state(tmp_path)
    assert state["run"]["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["training_state.pt"]  # no temporary file left behind


def test_damaged_state_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "training_state.pt").write_bytes(b"not a state")
    with pytest.raises(MtbertError, match="training_state.pt: cannot read"):
        load_training_state(tmp_path)


def test_resume_with_other_settings_is_refused(resume_cfg: Config) -> None:
    fit(replace(resume_cfg, epochs=1))
    with pytest.raises(MtbertError, match=r"--lr 0.003 -> 0.001"):
        fit(replace(resume_cfg, epochs=1, lr=1e-3))


def test_a_flag_newer_than_the_saved_state_counts_as_its_default(resume_cfg: Config) -> None:
    older = {k: v for k, v in resume_cfg.settings().items() if k != "graph_steps"}  # saved before --graph_steps existed
    check_resumable(resume_cfg, older, "state")
    with pytest.raises(MtbertError, match=r"--graph_steps False -> True"):
        check_resumable(replace(resume_cfg, graph_steps=True), older, "state")


def test_finished_run_is_not_trained_again(resume_cfg: Config) -> None:
    short = replace(resume_cfg, epochs=1)
    first = fit(short)
    history: list = []
    assert fit(short, report=history.append) == first
    assert history == []


def test_resume_with_another_number_of_processes_is_refused(resume_cfg: Config) -> None:
    short = replace(resume_cfg, epochs=2, save_every=0)
    fit(short)
    state = load_training_state(resume_cfg.resume)
    state["rng"] = state["rng"] * 2  # as if saved by 2 torchrun processes
    state["run"]["epoch"] = 1
    save_training_state(resume_cfg.resume, state)
    with pytest.raises(MtbertError, match=r"saved by 2 process\(es\), resumed by 1"):
        fit(short)
