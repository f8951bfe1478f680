"""MODEL_DTYPE: auto picks bf16 only where the hardware computes it natively."""

from __future__ import annotations

import pytest
import torch

from bot.core.config import SettingsError, load_settings
from bot.engine import model_dtype


def test_explicit_types_are_taken_as_given():
    assert model_dtype.resolve_dtype("float32", "cpu") is torch.float32
    assert model_dtype.resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert model_dtype.resolve_dtype("float16", "cuda") is torch.float16


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(model_dtype, "cpu_has_native_bf16", lambda: native)
    assert model_dtype.resolve_dtype("auto", "cpu") is expected
    assert model_dtype.resolve_dtype("auto", "mps") is torch.float32


def test_native_bf16_agrees_with_the_kernel_flags():
    with open("/proc/cpuinfo") as cpuinfo:
        flags = cpuinfo.read()
    assert model_dtype.cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_an_unknown_type_is_refused():
    with pytest.raises(SettingsError, match="MODEL_DTYPE"):
        load_settings(model_dtype="int4", _env_file=None)
