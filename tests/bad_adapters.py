"""Bad adapter files, one of each kind the adapter checks refuse (bot/core/adapter_sanity.py),
built with peft and safetensors from a good blob or a model directory.

`bad_adapters(...)` maps a kind to (blob, the name of the check that refuses it).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load, save
from transformers import AutoModelForCausalLM

from bot.core.adapter_io import lora_config, serialize_adapter

TensorChange = Callable[[str, torch.Tensor], torch.Tensor]


def _metadata(blob: bytes) -> dict[str, str]:
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + length])["__metadata__"]


def reforged(blob: bytes, *, tensors: TensorChange | None = None, keep: int | None = None,
             config: dict | None = None) -> bytes:
    """`blob` written again: each tensor through `tensors`, only the first `keep` tensors, and
    `config` merged into its LoraConfig."""
    metadata = _metadata(blob)
    found = load(blob)
    if tensors is not None:
        found = {key: tensors(key, value.clone()) for key, value in found.items()}
    if keep is not None:
        found = dict(list(found.items())[:keep])
    if config:
        fields = {**json.loads(metadata["lora_config"]), **config}
        metadata = {**metadata, "lora_config": json.dumps(fields)}
    return save(found, metadata=metadata)


def _first_value(value: float) -> TensorChange:
    """Set the first weight of the first lora_A tensor to `value`."""
    done: list[str] = []

    def change(key: str, tensor: torch.Tensor) -> torch.Tensor:
        if "lora_A" in key and not done:
            tensor[0, 0] = value
            done.append(key)
        return tensor
    return change


def peft_adapter(model_dir: str | Path, **config) -> bytes:
    """An adapter peft makes with `config` (its fresh weights) for the model in `model_dir`."""
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **config),
                                adapter_name="x")
    return serialize_adapter(peft_model, "x", str(model_dir))


def collapsing(model_dir: str | Path, settings) -> bytes:
    """Small finite weights that swamp the last block's MLP, so every prompt gets one token
    over and over: the half of c_fc's units that a direction turns on feed c_proj, which sums
    them (always positive) into one fixed direction of the residual stream."""
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = lora_config(settings.model_copy(update={"lora_targets": "c_attn,c_proj,c_fc"}))
    peft_model = get_peft_model(model, config, adapter_name="x")
    generator = torch.Generator().manual_seed(0)
    last = f"base_model.model.transformer.h.{model.config.n_layer - 1}.mlp."
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if ".lora_" in name:
                param.zero_()
        layers = dict(peft_model.named_modules())
        fc, proj = layers[last + "c_fc"], layers[last + "c_proj"]
        a, b = fc.lora_A["x"].weight, fc.lora_B["x"].weight
        a[0] = torch.randn(a.shape[1], generator=generator)  # one direction of the input
        b[:, 0] = torch.randn(b.shape[0], generator=generator) * 5  # turns half the units on
        a, b = proj.lora_A["x"].weight, proj.lora_B["x"].weight
        a[0] = 1.0  # sums the units (GELU: never below -0.17, large where on)
        b[:, 0] = torch.randn(b.shape[0], generator=generator) * 5  # into one direction
    return serialize_adapter(peft_model, "x", str(model_dir))


def bad_adapters(model_dir: str | Path, settings, good: bytes,
                 other_shapes: bytes) -> dict[str, tuple[bytes, str]]:
    """kind -> (blob, check that refuses it). `good` is an adapter for `model_dir`;
    `other_shapes` one built for another model that claims to be for `model_dir`."""
    junk = b"{not json at all"
    return {
        "NaN weights": (reforged(good, tensors=_first_value(math.nan)), "non-finite weights"),
        "Inf weights": (reforged(good, tensors=_first_value(math.inf)), "non-finite weights"),
        "lora_alpha 1e38": (reforged(good, config={"lora_alpha": 1e38}), "scale too large"),
        "weights x100": (reforged(good, tensors=lambda key, t: t * 100), "weights too large"),
        "wrong shapes": (other_shapes, "wrong shapes"),
        "2^63 header length": (struct.pack("<Q", 2 ** 63) + good[8:], "unreadable file"),
        "junk header": (struct.pack("<Q", len(junk)) + junk + good[8:], "unreadable file"),
        "rank 4096, partial tensors": (reforged(good, keep=3, config={"r": 4096}),
                                       "rank too large"),
        "rank 300": (peft_adapter(model_dir, r=300, target_modules=["c_attn"],
                                  fan_in_fan_out=True), "rank too large"),
        "wte target": (peft_adapter(model_dir, target_modules=["wte"]), "unsupported config"),
        "DoRA": (peft_adapter(model_dir, target_modules=["c_attn"], use_dora=True,
                              fan_in_fan_out=True), "unsupported config"),
        "collapse": (collapsing(model_dir, settings), "degenerate text"),
    }
