"""--torch_compile: a torch.compile'd encoder trains and evaluates like the eager one, with few compiled graphs."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch._dynamo

from mtbert.config import Config
from mtbert.fitting import fit


def run(cfg: Config, history: list | None = None) -> dict[str, float]:
    return fit(cfg, report=None if history is None else history.append)


@pytest.mark.slow
@pytest.mark.parametrize("unpad", [False, True])
def test_compiled_encoder_trains_like_eager(cfg: Config, tmp_path: Path, unpad: bool) -> None:
    """Two epochs with and without --torch_compile: the same losses and dev metrics (float32, no dropout: compiled
    kernels draw other random numbers). Per compiled module one graph for training and one for evaluation, not
    one per shape, and none again for the reloaded best model's test predictions. SophiaH's Hessian
    refresh, which differentiates twice, runs those steps eagerly. The same with --unpad, whose token count per pass
    is one more symbol of the graphs."""
    folder = shutil.copytree(cfg.model, tmp_path / "no-attention-dropout")
    hf_config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**hf_config, "attention_probs_dropout_prob": 0.0}))
    short = replace(cfg, model=str(folder), epochs=2, unpad=unpad)
    eager, compiled = [], []
    run(short, eager)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    run(replace(short, torch_compile="on"), compiled)
    for a, b in zip(eager, compiled, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["mean"] == pytest.approx(a["mean"], abs=1e-4)
    # the encoder (its layers inside one graph) and the pooling, each for training and for inference
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 4
    graphs = []  # on a CPU, the compiled kernels without CUDA graphs
    run(replace(short, torch_compile="cudagraphs", epochs=1), graphs)
    assert graphs[0]["train_loss"] == pytest.approx(eager[0]["train_loss"], rel=1e-5)
    sophia = replace(short, optimizer="sophiah", hess_interval=2, epochs=1)
    eager_sophia, compiled_sophia = [], []
    run(sophia, eager_sophia)
    run(replace(sophia, torch_compile="on"), compiled_sophia)  # the refresh eager, the other steps compiled
    assert compiled_sophia[0]["train_loss"] == pytest.approx(eager_sophia[0]["train_loss"], rel=1e-5)
    assert compiled_sophia[0]["mean"] == pytest.approx(eager_sophia[0]["mean"], abs=1e-4)
