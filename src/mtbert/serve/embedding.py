"""Sentence embeddings: mean-pooled, L2-normalised encoder states, as all-MiniLM-L6-v2 was trained to give."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mtbert.accel.kernels import tune_kernels
from mtbert.model.encoder import BertEncoder
from mtbert.model.hf import load_encoder
from mtbert.model.hub import resolve
from mtbert.model.tokenizer import Tokenizer, pad_batch


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the real (unpadded) token states: (B, T, H), (B, T) -> (B, H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


@functools.lru_cache(maxsize=4)
def _load(model: str | None, device: str) -> tuple[BertEncoder, Tokenizer]:
    tune_kernels(torch.device(device))
    folder = resolve(model).folder
    return load_encoder(folder).to(device), Tokenizer.from_pretrained(folder)


@torch.inference_mode()
def encode(
    sentences: list[str],
    model: str | Path | None = None,
    batch_size: int = 32,
    device: str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Embeds sentences as unit vectors, (N, H) float32; `model` is a checkpoint folder or hub name (None: packaged
    MiniLM).

    Sentences are sorted by length before batching so that each batch pads little; the output keeps input order.
    `progress`: a progress bar of the sentences encoded, on stderr if it is a terminal (removed when done).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder, tokenizer = _load(None if model is None else str(model), device)
    ids = tokenizer.encode_ids(list(sentences))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.empty(len(ids), encoder.config.hidden_size)
    with tqdm(
        total=len(order), desc="encoding", unit="sentence", disable=None if progress else True, leave=False
    ) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch, mask = pad_batch([ids[i] for i in chunk], tokenizer.pad_id)  # (B, T) each
            batch, mask = batch.to(device), mask.to(device)
            hidden = encoder(batch, mask if not bool(mask.all()) else None)  # (B, T, H); no mask without padding
            out[chunk] = F.normalize(mean_pool(hidden, mask), dim=-1).float().cpu()
            bar.update(len(chunk))
    return out.numpy()
