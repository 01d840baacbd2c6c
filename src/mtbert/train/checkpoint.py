"""The full training state that --resume saves and restores."""

from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mtbert.config import Config, changed_settings
from mtbert.errors import MtbertError
from mtbert.model.multitask import MultitaskModel
from mtbert.outputs import atomic_write_bytes
from mtbert.train.distributed import Distributed
from mtbert.train.ema import WeightAverage
from mtbert.train.schedule import Scheduler

STATE = "training_state.pt"


@dataclass
class RunState:
    """Where a run stands, saved with --resume: epochs done, batches done in the current epoch, optimizer steps,
    the current epoch's summed loss, the best dev metrics so far (with their "epoch") and the TensorBoard folder."""

    logdir: str
    epoch: int = 0
    batch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    best_metrics: dict[str, float] = field(default_factory=dict)


def save_state(
    cfg: Config,
    world: Distributed,
    model: MultitaskModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler | None,
    state: RunState,
    ema: WeightAverage | None = None,
) -> None:
    """The full training state to --resume (rank 0 writes it, with every rank's random generators, --ema's averaged
    weights and, for a mixture of experts, its routing counts of the epoch so far)."""
    rngs = world.gather(rng_state())
    moe = model.moe
    routing = world.gather(moe.routed.cpu() if moe is not None and moe.routed is not None else None)
    if world.is_main:
        saved = {
            "config": cfg.settings(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "run": asdict(state),
            "rng": rngs,
            "routing": routing,
            "ema": ema.state_dict() if ema is not None else None,
        }
        save_training_state(cfg.resume, saved)


def save_training_state(folder: str | Path, state: dict) -> None:
    """Writes the full training state to `folder`/training_state.pt atomically (see `atomic_write_bytes`), so that
    the previous state stays loadable until the new one is complete."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(folder / STATE, buffer.getvalue())


def load_training_state(folder: str | Path) -> dict | None:
    """The state saved by `save_training_state` (tensors and plain values only: no code runs), or None if absent."""
    path = Path(folder) / STATE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file: torch raises several error types
        raise MtbertError(f"{path}: cannot read the training state ({e}); delete it to start afresh") from e


# Config fields a resumed run may change; any other difference from the saved run's config is an error.
RESUMABLE_CHANGES = {
    "resume",
    "save_every",
    "use_gpu",
    "chunk_tokens",
    "unpad",
    "torch_compile",
    "local_files_only",
    "tensorboard_subfolder",
    "tag_cache",
    "activation_checkpointing",
    "profiler",
    "profiler_steps",
}


def restore(
    cfg: Config,
    saved: dict,
    world: Distributed,
    model: MultitaskModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler | None,
    ema: WeightAverage | None = None,
) -> RunState:
    """Loads a saved training state into the model, optimizer, scheduler and this process's random generators;
    returns where the loop stood. Refuses a state saved with other settings or another number of processes."""
    check_resumable(cfg, saved["config"], cfg.resume)
    if len(saved["rng"]) != world.world_size:  # every process continues its own random streams
        raise MtbertError(
            f"--resume {cfg.resume}: saved by {len(saved['rng'])} process(es), resumed by {world.world_size}; "
            "resume with the same number of processes"
        )
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"][world.rank])
    if ema is not None and saved.get("ema") is not None:
        ema.load_state_dict(saved["ema"])
    routed = saved.get("routing", [None] * world.world_size)[world.rank]
    if model.moe is not None and routed is not None:  # the epoch's routing counts so far
        model.moe.routed = routed.to(model.device)
    return RunState(**saved["run"])


def check_resumable(cfg: Config, saved: dict, folder: str) -> None:
    """Stops a resume whose flags would change the run (other than RESUMABLE_CHANGES), naming the flags. A flag
    newer than the saved state counts as its default there."""
    changed = changed_settings(saved, cfg, ignore=RESUMABLE_CHANGES)
    if changed:
        raise MtbertError(
            f"--resume {folder}: the saved run used other settings ({'; '.join(changed)}); "
            "use the same flags, or another --resume folder to start a new run"
        )


def rng_state() -> dict:
    """Every random generator's state (Python, NumPy, torch CPU and CUDA) as tensors and plain values."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
