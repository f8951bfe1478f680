"""A tiny GPT-2 whose greedy replies run on without repeating a token, and adapters for it.

The default tiny model (initializer_range 0.02) repeats one token per prompt, which the probe
cannot tell from an adapter's collapse (bot/core/adapter_sanity.py), so its degeneracy check
holds back there; with initializer_range 0.2 the base model babbles without repeats, and the
probe's every check can refuse.
"""

from __future__ import annotations

from pathlib import Path

from adapters_util import make_adapter_bytes
from bad_adapters import bad_adapters

from bot.core.config import load_settings
from trainer.demo.tiny_model import build_tiny_model

LIVELY_INIT = 0.2


def build_lively(directory: Path) -> Path:
    return build_tiny_model(directory, initializer_range=LIVELY_INIT)


def adapter_kit(model_dir: Path, other_dir: Path) -> dict:
    """Two good adapters for `model_dir` ("v1", "v2") and every bad kind ("bad": kind ->
    (blob, check)); `other_dir` receives a model of other shapes for the forged one."""
    lora = load_settings(_env_file=None)
    other = build_tiny_model(other_dir, n_embd=32)
    good = make_adapter_bytes(model_dir, lora, seed=1)
    return {"v1": good, "v2": make_adapter_bytes(model_dir, lora, seed=2),
            "bad": bad_adapters(model_dir, lora, good,
                                make_adapter_bytes(other, lora, seed=3,
                                                   base_model=str(model_dir)))}
