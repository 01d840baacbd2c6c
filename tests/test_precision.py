"""--precision: which autocast type each device gets."""

import pytest
import torch

from mtbert.inference import precision
from mtbert.inference.precision import autocast, autocast_dtype


@pytest.mark.parametrize("native_bf16", [True, False])
def test_autocast_follows_precision_and_device(native_bf16: bool, monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native_bf16)
    assert autocast_dtype("cuda", "auto") == autocast_dtype("cpu", "bf16") == torch.bfloat16
    assert autocast_dtype("cuda", "fp32") is autocast_dtype("cpu", "fp32") is None
    assert autocast_dtype("cpu", "auto") == (torch.bfloat16 if native_bf16 else None)
    assert autocast("cpu", "auto")._enabled == native_bf16 and autocast("cpu", "bf16")._enabled
