"""--precision: the autocast type of the forward pass on each device (bf16, or float32)."""

from __future__ import annotations

import functools

import torch


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX), which makes bf16 training
    steps faster than float32 ones (docs/speed.md); without it bf16 is emulated, and slower.
    (PyTorch's own checks, private: a build without them counts as no native bf16.)"""
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check is not None and check() for check in checks)


def autocast_dtype(device_type: str, precision: str) -> torch.dtype | None:
    """The forward pass's autocast type for --precision: bfloat16 for bf16, and for auto on CUDA and on CPUs with
    native bf16; else none (float32)."""
    native = device_type == "cuda" or (device_type == "cpu" and cpu_has_native_bf16())
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and native) else None


def autocast(device: torch.device | str, precision: str, cache: bool = True) -> torch.autocast:
    """Autocast as --precision says. Weights, gradients and the optimizer stay float32: bf16 needs no loss scaling.
    `cache`: keep each weight's bf16 copy for the rest of the autocast region (which a CUDA graph must not)."""
    device_type = torch.device(device).type
    dtype = autocast_dtype(device_type, precision)
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None, cache_enabled=cache)
