"""Saved models (safetensors weights + JSON config + tokenizer files in one folder, written atomically) and the
full training state that --resume saves and restores."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mtbert.config import Config, changed_settings
from mtbert.data.files import atomic_write_bytes
from mtbert.errors import MtbertError
from mtbert.model.encoder import BertEncoder, EncoderConfig
from mtbert.model.moe import MixtureOfEncoders
from mtbert.model.multitask import MultitaskModel
from mtbert.model.tokenizer import Tokenizer
from mtbert.outputs import clear_stale, temp_prefix, user_permissions
from mtbert.train.distributed import Distributed
from mtbert.train.schedule import Scheduler

WEIGHTS, META, STATE = "model.safetensors", "mtbert.json", "training_state.pt"


def save_model(folder: str | Path, model: MultitaskModel, tokenizer: Tokenizer, meta: dict) -> None:
    """Writes the model to `folder`. The files are first written to a sibling temporary folder that then replaces
    `folder` (the previous one kept as `.NAME.old` until then), so that at every instant a complete model is on
    disk: `folder`, or the previous one that load_model recovers. What an earlier crash left is cleared first."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    old = recover(folder)
    clear_stale(folder.parent, temp_prefix(folder))
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=temp_prefix(folder)))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, tmp / WEIGHTS, metadata={"format": "pt"})
        full_meta = {"encoder": model.config.to_dict(), "tasks": list(model.heads), **meta}
        if model.moe is not None:  # a mixture of experts: how many, and how its gate routes
            full_meta["moe"] = {"experts": len(model.moe.experts), "gate": model.moe.gate_mode}
        if model.tag_vocab is not None:  # a model that needs tags keeps their names, to tag new input the same way
            full_meta["tags"] = model.tag_vocab
        (tmp / META).write_text(json.dumps(full_meta, indent=2) + "\n")
        tokenizer.save(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        user_permissions(tmp)
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover(folder: Path) -> Path:
    """Puts back the previous model `.NAME.old` if a crash in save_model's swap left only it; returns its path."""
    old = folder.with_name(f".{folder.name}.old")
    if not folder.exists() and (old / WEIGHTS).is_file():
        with contextlib.suppress(OSError):  # a read-only folder: load_model reads the previous model where it is
            os.replace(old, folder)
    return old


def load_model(folder: str | Path, dropout: float = 0.0) -> tuple[MultitaskModel, Tokenizer, dict]:
    """Loads a folder written by `save_model` (no pickles are executed). Returns model (eval mode), tokenizer, meta."""
    folder = Path(folder)
    old = recover(folder)
    folder = old if not folder.exists() and old.is_dir() else folder
    meta_file, weights_file = folder / META, folder / WEIGHTS
    for f in (meta_file, weights_file):
        if not f.is_file():
            raise MtbertError(f"{f}: missing; is {folder} a model folder saved by `mtbert train`?")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        enc_cfg = EncoderConfig(**meta["encoder"])
        tasks = tuple(meta["tasks"])
        moe = meta.get("moe")
        encoder = MixtureOfEncoders.empty(enc_cfg, moe["experts"], moe["gate"]) if moe else BertEncoder(enc_cfg)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise MtbertError(f"{meta_file}: not a valid mtbert model description ({e})") from e
    try:
        state = load_file(weights_file)
    except Exception as e:  # safetensors raises its own error types on a damaged file
        raise MtbertError(f"{weights_file}: cannot read weights ({e}); the file may be truncated") from e
    tokenizer = Tokenizer.from_pretrained(folder)
    model = MultitaskModel(encoder, tasks, dropout, pad_id=tokenizer.pad_id, tag_vocab=meta.get("tags"))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise MtbertError(f"{weights_file}: weights do not match {meta_file} ({e})") from e
    return model.eval(), tokenizer, meta


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
RESUMABLE_CHANGES = {"resume", "save_every", "use_gpu", "chunk_tokens", "unpad", "torch_compile", "local_files_only",
                     "tensorboard_subfolder", "tag_cache", "activation_checkpointing", "profiler",
                     "profiler_steps"}  # fmt: skip


def restore(
    cfg: Config,
    saved: dict,
    world: Distributed,
    model: MultitaskModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Scheduler | None,
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
