"""Kernel settings for batches whose shapes change every step, made wherever a run picks its device."""

from __future__ import annotations

import os

import torch


def tune_kernels(device: torch.device) -> None:
    """CUDA: no cuDNN attention, which builds an execution plan for every new shape, on the host, in every call
    (docs/speed.md), so SDPA takes FlashAttention (no padding) or memory-efficient attention (padding mask); TF32 for
    float32 matrix products.
    CPU: oneDNN, which runs PyTorch's CPU matrix products, keeps a compiled kernel with its own buffers for every
    input shape it has seen (up to 1,024), and nearly every pass has a new shape: the cache is capped at 16 entries,
    which keeps the peak memory of training down at the same speed (docs/speed.md). This takes effect only before
    oneDNN's first kernel, and a user's own setting wins.
    """
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.matmul.allow_tf32 = True
    elif device.type == "cpu":
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
