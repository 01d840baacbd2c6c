"""--ema: the averaged weights equal a hand-computed average, and they are what is evaluated, saved and resumed."""

from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from mtbert.config import Config
from mtbert.fitting import fit
from mtbert.train.checkpoint import load_training_state
from mtbert.train.ema import WeightAverage
from mtbert.train.setup import run_name


def test_the_average_is_the_hand_computed_one_and_the_raw_weights_come_back() -> None:
    model = torch.nn.Linear(3, 2)
    w0 = model.weight.detach().clone()
    ema = WeightAverage(model, beta=0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    with torch.no_grad():
        model.weight.mul_(2.0)
    ema.update(model)
    w1, w2 = w0 + 1.0, (w0 + 1.0) * 2.0
    b1, b2 = 1 / 10, 2 / 11  # the warm-up, min(0.9, (1 + n) / (10 + n)), below 0.9 for the first updates
    expected = b2 * (b1 * w0 + (1 - b1) * w1) + (1 - b2) * w2
    torch.testing.assert_close(ema.state_dict()["average"]["weight"], expected)
    assert ema.updates == 2 and WeightAverage(model, 0.9).factor() == 0.1
    ema.updates = 1000
    assert ema.factor() == 0.9  # then beta itself
    with ema.applied(model):
        torch.testing.assert_close(model.weight, expected)
    torch.testing.assert_close(model.weight, w2)  # put back


def test_a_run_evaluates_saves_and_resumes_the_averaged_weights(cfg: Config, tmp_path: Path) -> None:
    run = replace(cfg, epochs=1, ema=0.5, resume=str(tmp_path / "state"))
    fit(run)
    saved = load_file(Path(run.save_dir) / run_name(run) / "model.safetensors")
    state = load_training_state(run.resume)
    average = state["ema"]["average"]
    assert set(average) <= set(saved) and state["ema"]["updates"] > 0
    for key, value in average.items():
        torch.testing.assert_close(saved[key], value, msg=key)  # the saved model is the average
    changed = [k for k in average if not torch.equal(average[k], state["model"][k])]
    assert changed  # and the raw weights, which training goes on from, are not
