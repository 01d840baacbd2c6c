"""A training step recorded per shape (GraphSteps, --graph_steps) against the eager train_step, on a tiny random model
and the toy CSVs. Off CUDA nothing is recorded, so this checks everything but the recording itself: one pass per
step, the shapes, the inputs and labels copied into a shape's tensors, the losses, the update, the training loop."""

from copy import deepcopy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mtbert.accel.graph_steps import GraphSteps
from mtbert.accel.modes import speed_for
from mtbert.accel.passes import PassInputs, ShapedPasses
from mtbert.config import Config
from mtbert.data.sampler import MultitaskSampler
from mtbert.data.task_data import read_task
from mtbert.data.task_files import split_file
from mtbert.errors import MtbertError
from mtbert.fitting import fit
from mtbert.model.multitask import MultitaskModel
from mtbert.model.tasks import sentences_per_step
from mtbert.train.loop import train
from mtbert.train.optim import build_optimizer
from mtbert.train.setup import place_model, seed_everything, setup_model, setup_optimization
from mtbert.train.speed import Speed
from mtbert.train.step import train_step

WEIGHTS = {"sst": 1.0, "para": 0.5, "sts": 3.0}


@pytest.mark.parametrize("unpad", [False, True])
def test_graph_steps_train_as_train_step(still_cfg: Config, unpad: bool) -> None:
    """Steps of two shapes (batches of 4, then the epoch's last 2), alternating: each step's losses and the weights
    after all of them are those of the eager step, so every step ran on its own inputs and labels."""
    model, tokenizer = setup_model(still_cfg)
    model.train()
    data = {t: read_task(split_file(still_cfg, t, "train"), t, tokenizer) for t in still_cfg.active_tasks}
    sampler = MultitaskSampler(
        {t: len(d) for t, d in data.items()}, still_cfg.samples_per_epoch, still_cfg.batch_size, 0
    )
    batches = [rows for epoch in range(3) for rows in sampler.epoch(epoch)]
    eager, graphed = deepcopy(model), deepcopy(model)
    graphed.passes = ShapedPasses(None, "off", sentences_per_step(still_cfg.active_tasks, still_cfg.batch_size), unpad)
    # a large eps: Adam's update of a coordinate whose gradient is about 0 is noise/noise, which any rounding flips
    eager_opt, graphed_opt = (torch.optim.AdamW(m.parameters(), lr=3e-3, eps=1e-3) for m in (eager, graphed))
    steps = GraphSteps(graphed, graphed_opt, WEIGHTS, 0.5, "fp32")
    passes, run = [], graphed.passes.run

    def record(model: MultitaskModel, inputs: PassInputs) -> torch.Tensor:
        passes.append(tuple(inputs.ids.shape))
        return run(model, inputs)

    graphed.passes.run = record
    for rows in batches:
        expected = train_step(eager, eager, eager_opt, data, rows, WEIGHTS, 0.5, "cpu", "fp32")
        losses = steps(data, rows)
        assert list(losses) == list(still_cfg.active_tasks)
        for t in still_cfg.active_tasks:
            torch.testing.assert_close(losses[t], expected[t], atol=1e-5, rtol=1e-5)
    assert [len(rows["sst"]) for rows in batches] == [4, 2] * 3
    assert len(steps.shapes) == 2
    assert all((shape.inputs.groups is not None) == unpad for shape in steps.shapes.values())  # attention groups
    assert passes == [(20, 16), (10, 16)] * 3  # one pass per step: 4 + 2 * 4 + 2 * 4 sentences, 16 positions
    for (name, a), b in zip(eager.named_parameters(), graphed.parameters(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("unpad", [False, True])
def test_graph_steps_in_the_training_loop(still_cfg: Config, unpad: bool) -> None:
    """fit() with --graph_steps reports the numbers of a run without it, and saves the model as usual."""
    plain, graphed = [], []
    fit(replace(still_cfg, unpad=unpad), report=plain.append)
    graph_cfg = replace(still_cfg, graph_steps=True, unpad=unpad)
    best = fit(graph_cfg, report=graphed.append)
    for a, b in zip(plain, graphed, strict=True):
        for key in ("train_loss", "sst/accuracy", "para/accuracy", "sts/pearson"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-4), key
    assert best["epoch"] in (1, 2) and (Path(still_cfg.save_dir) / "finetune-2-0.003-adamw-none-multitask").is_dir()


def test_graph_steps_refuse_what_they_cannot_record(still_cfg: Config, monkeypatch) -> None:
    with pytest.raises(ValueError, match="--optimizer adamw"):
        replace(still_cfg, graph_steps=True, optimizer="sophiah")
    with pytest.raises(ValueError, match="not cudagraphs"):
        replace(still_cfg, graph_steps=True, torch_compile="cudagraphs")
    model, _ = setup_model(still_cfg)
    sophia = build_optimizer("sophiag", model, model.heads, 1e-3, 1e-3, 0.0)
    with pytest.raises(MtbertError, match="AdamW"):
        GraphSteps(model, sophia, WEIGHTS, 0.0, "fp32")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    with pytest.raises(MtbertError, match="torchrun"):  # the steps of one process
        speed_for(replace(still_cfg, graph_steps=True))
    with pytest.raises(MtbertError, match="mtbert.fit"):  # the readable loop alone refuses a GPU mode
        train(replace(still_cfg, graph_steps=True))


def test_loss_weights_scale_each_task_in_the_step(still_cfg: Config) -> None:
    """A task of weight 0 changes nothing (the step equals one without it); doubling every weight doubles the
    losses the step returns."""
    model, tokenizer = setup_model(still_cfg)
    data = {t: read_task(split_file(still_cfg, t, "train"), t, tokenizer) for t in still_cfg.active_tasks}
    rows = {t: np.arange(4) for t in still_cfg.active_tasks}

    def step(tasks: tuple[str, ...], weights: dict[str, float]) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
        copy = deepcopy(model)
        optimizer = torch.optim.SGD(copy.parameters(), lr=0.1)
        losses = train_step(copy, copy, optimizer, data, {t: rows[t] for t in tasks}, weights, 0.0, "cpu")
        return losses, copy

    _, without_sts = step(("sst", "para"), {"sst": 1.0, "para": 1.0})
    _, zero_sts = step(("sst", "para", "sts"), {"sst": 1.0, "para": 1.0, "sts": 0.0})
    for (name, a), b in zip(without_sts.named_parameters(), zero_sts.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    once, with_sts = step(("sst", "para", "sts"), {"sst": 1.0, "para": 1.0, "sts": 1.0})
    twice, _ = step(("sst", "para", "sts"), {"sst": 2.0, "para": 2.0, "sts": 2.0})
    for t in still_cfg.active_tasks:
        torch.testing.assert_close(twice[t], 2 * once[t])
    assert not torch.equal(with_sts.encoder.layers[0].ffn.up.weight, zero_sts.encoder.layers[0].ffn.up.weight)
    assert Config.from_settings({"sts_loss_weight": 3.0, "sst": True, "sts": True}).loss_weights == {
        "sst": 1.0,
        "sts": 3.0,
    }


@pytest.mark.parametrize("optimizer", ["adamw", "sophiah"])
def test_activation_checkpointing_gives_the_same_step(still_cfg: Config, optimizer: str) -> None:
    """Recomputed layers (dropout on: the recomputation replays its masks) give the same gradients and update,
    SophiaH's second derivatives included."""
    results = []
    for checkpointing in (False, True):
        cfg = replace(still_cfg, optimizer=optimizer, hidden_dropout_prob=0.2, activation_checkpointing=checkpointing)
        seed_everything(0)
        model, tokenizer = setup_model(cfg)
        place_model(model, cfg, torch.device("cpu"), Speed())
        model.train()
        optimizer_, _ = setup_optimization(cfg, model, 4)
        data = {t: read_task(split_file(cfg, t, "train"), t, tokenizer) for t in cfg.active_tasks}
        rows = {t: np.arange(4) for t in cfg.active_tasks}
        torch.manual_seed(1)
        losses = train_step(model, model, optimizer_, data, rows, cfg.loss_weights, cfg.clip, "cpu", "fp32")
        results.append((losses, model.state_dict()))
    (a, wa), (b, wb) = results
    assert all(torch.equal(a[t], b[t]) for t in a)
    for name, value in wa.items():
        torch.testing.assert_close(wb[name], value, atol=1e-6, rtol=1e-5, msg=name)
