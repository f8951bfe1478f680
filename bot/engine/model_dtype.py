"""The floating-point type of the served model's weights (MODEL_DTYPE).

`auto`: bfloat16 on a GPU that has it (else float16), bfloat16 on a CPU with native bf16 math
(avx512_bf16 or AMX; bench/serve.py measured 1.6-2.2x the float32 tokens/s there, with
bot/engine/cpu_bf16.py), float32 on other CPUs, where bf16 math is converted in software (not
measured here: this machine has avx512_bf16).
"""

from __future__ import annotations

from pathlib import Path

DTYPES = ("auto", "float32", "bfloat16", "float16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX-BF16)."""
    import torch

    get_capabilities = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if get_capabilities is not None:
        try:
            found = get_capabilities()
            return bool(found.get("avx512_bf16") or found.get("amx_bf16"))
        except Exception:  # an old or unusual build: read the kernel's flags instead
            pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(setting: str, device: str):
    """The torch dtype for MODEL_DTYPE `setting` on `device` (cpu, cuda, cuda:N, mps)."""
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32
