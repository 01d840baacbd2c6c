"""The one place where the speed flags (--unpad, --torch_compile, --graph_steps) become the seam train() takes."""

from __future__ import annotations

import logging
import os

from mtbert.accel.graph_steps import GraphSteps
from mtbert.accel.kernels import tune_kernels
from mtbert.accel.passes import ShapedPasses
from mtbert.config import Config
from mtbert.errors import MtbertError
from mtbert.model.multitask import MultitaskModel
from mtbert.model.tasks import sentences_per_step
from mtbert.train.speed import Speed

log = logging.getLogger(__name__)


def speed_for(cfg: Config) -> Speed:
    """The speed modes `cfg` asks for: kernel settings always; shaped passes (and a compiled encoder) for --unpad
    and --torch_compile; recorded steps for --graph_steps. `mtbert.fit(cfg)` trains with them."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    if cfg.graph_steps and world_size > 1:
        raise MtbertError("--graph_steps records the steps of one process; under torchrun leave it out")
    if not (cfg.unpad or cfg.torch_compile != "off" or cfg.graph_steps):
        return Speed(tune=tune_kernels)
    step_sentences = sentences_per_step(cfg.active_tasks, -(-cfg.batch_size // world_size))  # one process's share

    def prepare(model: MultitaskModel) -> None:
        model.passes = ShapedPasses(cfg.chunk_tokens, cfg.torch_compile, step_sentences, cfg.unpad)
        if cfg.torch_compile != "off":
            model.passes.compile(model)
            log.info(
                "--torch_compile %s: the first step and the first evaluation compile the encoder (cached for "
                "later runs)",
                cfg.torch_compile,
            )
        if cfg.graph_steps and model.device.type != "cuda":
            slow = "" if cfg.unpad else " (padded to the step's longest, which is slow on a CPU; add --unpad)"
            log.warning(
                "--graph_steps records CUDA graphs, and this run is on the CPU: its steps run eagerly, each "
                "as one pass of all its sentences%s",
                slow,
            )

    return Speed(tune=tune_kernels, prepare=prepare, steps=GraphSteps if cfg.graph_steps else None)
