"""--unfreeze_interval: layers join training top-down on schedule, keeping the optimizer's state of the others."""

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mtbert.config import Config
from mtbert.fitting import fit
from mtbert.inference.saved import META
from mtbert.train.checkpoint import load_training_state
from mtbert.train.setup import run_name, setup_model, setup_optimization


def states_per_epoch(cfg: Config, folder: Path) -> list[dict]:
    """Trains `cfg` (with --resume); returns the training state after every epoch. (The loop reports an epoch
    before it saves its state, so each report copies the previous epoch's.)"""
    cfg = replace(cfg, resume=str(folder / "state"))
    copies: list[Path] = []

    def report(metrics: dict) -> None:
        if metrics["epoch"] > 1:
            copies.append(Path(shutil.copy(folder / "state" / "training_state.pt", folder / f"{metrics['epoch']}.pt")))

    fit(cfg, report=report)
    return [torch.load(f, weights_only=True) for f in copies] + [load_training_state(cfg.resume)]


def changed(state: dict, initial: dict, prefix: str) -> bool:
    names = [k for k in initial if k.startswith(prefix)]
    assert names, prefix
    return any(not torch.equal(state["model"][k], initial[k]) for k in names)


@pytest.mark.parametrize("option", ["finetune", "pretrain"])
def test_layers_stay_bit_identical_until_their_epoch(cfg: Config, tmp_path: Path, option: str) -> None:
    """The tiny encoder has 2 layers: layer 2 (layers.1) trains from epoch 1, layer 1 from 2, the embeddings from 3;
    under either --option."""
    cfg = replace(cfg, epochs=3, samples_per_epoch=8, batch_size=4, unfreeze_interval=1, option=option)
    initial = {f"encoder.{k}": v for k, v in setup_model(cfg)[0].encoder.state_dict().items()}
    after = states_per_epoch(cfg, tmp_path)
    assert changed(after[0], initial, "encoder.layers.1.")
    assert not changed(after[0], initial, "encoder.layers.0.") and not changed(after[0], initial, "encoder.emb.")
    assert changed(after[1], initial, "encoder.layers.0.") and not changed(after[1], initial, "encoder.emb.")
    assert changed(after[2], initial, "encoder.emb.")
    assert not changed(after[2], initial, "encoder.pooler.")  # BERT's pooler never trains
    meta = json.loads((Path(cfg.save_dir) / run_name(cfg) / META).read_text())
    assert meta["unfreezing"] == {"layer 2": 1, "layer 1": 2, "embeddings": 3}


def optimizer_states(state: dict, cfg: Config) -> dict[str, dict]:
    """Parameter name -> its optimizer state (a saved state is keyed by the index in the optimizer's groups)."""
    model = setup_model(cfg)[0]
    optimizer, _ = setup_optimization(cfg, model, 1)
    name_of = {id(p): n for n, p in model.named_parameters()}
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    return {names[i]: s for i, s in state["optimizer"]["state"].items()}


@pytest.mark.slow
def test_joining_keeps_the_state_of_parameters_already_training(cfg: Config, tmp_path: Path, caplog) -> None:
    """Up to the join, the AdamW state of a head and of the top layer is the same as in a run where nothing else
    trains yet (interval 2); after it, their step count runs on while the joined layer's starts afresh."""
    cfg = replace(cfg, epochs=3, samples_per_epoch=8, batch_size=4, lr=1e-3)  # 2 steps per epoch
    with caplog.at_level(logging.INFO, logger="mtbert"):
        one = states_per_epoch(replace(cfg, unfreeze_interval=1), tmp_path / "one")
    two = states_per_epoch(replace(cfg, unfreeze_interval=2), tmp_path / "two")
    assert "epoch 2: layer 1 start training" in caplog.text
    a, b = optimizer_states(one[0], cfg), optimizer_states(two[0], cfg)
    early = [n for n in a if n.startswith(("heads.sst", "encoder.layers.1.", "pool."))]
    assert early and not any(n.startswith("encoder.layers.0.") for n in a)  # no state before it trains
    for name in early:
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    joined = optimizer_states(one[1], cfg)
    assert all(float(joined[n]["step"]) == 4 for n in early)  # 2 epochs of 2 steps: not reset at the join
    assert float(joined["encoder.layers.0.attn.q.weight"]["step"]) == 2


def test_sophia_estimates_the_hessian_of_a_joining_layer_on_its_first_step(cfg: Config, tmp_path: Path) -> None:
    cfg = replace(
        cfg,
        epochs=2,
        samples_per_epoch=8,
        batch_size=4,
        lr=1e-3,
        optimizer="sophiah",
        hess_interval=100,
        unfreeze_interval=1,
    )
    final = optimizer_states(states_per_epoch(cfg, tmp_path)[-1], cfg)
    hessian = {name: s["hessian"] for name, s in final.items()}
    # the only regular refresh is step 0's (interval 100): layer 1's estimate comes from the refresh at its join
    assert hessian["encoder.layers.0.ffn.up.weight"].abs().sum() > 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "3", "--unfreeze_interval", "3"], "--unfreeze_interval 3 with --epochs 3"),
        (["--unfreeze_interval", "-1"], "--unfreeze_interval must not be negative"),
        (["--unfreeze_interval", "1", "--graph_steps"], "--graph_steps"),
    ],
)
def test_impossible_schedules_are_refused_naming_the_flags(flags: list[str], message: str, capsys) -> None:
    from mtbert.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err
