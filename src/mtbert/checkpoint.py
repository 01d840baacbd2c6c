"""Saved models: safetensors weights + JSON config + tokenizer files in one folder, written atomically."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mtbert.data import atomic_write_bytes
from mtbert.encoder import BertEncoder, EncoderConfig
from mtbert.errors import MtbertError
from mtbert.model import MultitaskModel
from mtbert.tokenizer import Tokenizer

WEIGHTS, META, STATE = "model.safetensors", "mtbert.json", "training_state.pt"


def save_model(folder: str | Path, model: MultitaskModel, tokenizer: Tokenizer, meta: dict) -> None:
    """Writes the model to `folder`. The files are first written to a sibling temporary folder that then
    replaces `folder`, so a crash leaves the previous model (or nothing), never a half-written one."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, tmp / WEIGHTS, metadata={"format": "pt"})
        full_meta = {"encoder": model.encoder.config.to_dict(), "tasks": list(model.heads), **meta}
        (tmp / META).write_text(json.dumps(full_meta, indent=2) + "\n")
        tokenizer.save(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_model(folder: str | Path, dropout: float = 0.0) -> tuple[MultitaskModel, Tokenizer, dict]:
    """Loads a folder written by `save_model` (no pickles are executed). Returns model (eval mode), tokenizer, meta."""
    folder = Path(folder)
    meta_file, weights_file = folder / META, folder / WEIGHTS
    for f in (meta_file, weights_file):
        if not f.is_file():
            raise MtbertError(f"{f}: missing; is {folder} a model folder saved by `mtbert train`?")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        enc_cfg = EncoderConfig(**meta["encoder"])
        tasks = tuple(meta["tasks"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise MtbertError(f"{meta_file}: not a valid mtbert model description ({e})") from e
    try:
        state = load_file(weights_file)
    except Exception as e:  # safetensors raises its own error types on a damaged file
        raise MtbertError(f"{weights_file}: cannot read weights ({e}); the file may be truncated") from e
    tokenizer = Tokenizer.from_pretrained(folder)
    model = MultitaskModel(BertEncoder(enc_cfg), tasks, dropout, pad_id=tokenizer.pad_id)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise MtbertError(f"{weights_file}: weights do not match {meta_file} ({e})") from e
    return model.eval(), tokenizer, meta


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
