"""LoRA adapters as one self-contained safetensors blob: the bytes the registry stores.

The blob's tensors are peft's adapter state dict; its safetensors metadata carries the
`LoraConfig` (JSON) and the base model it was trained on. Reading uses safetensors only, and
every blob read passes the static checks of bot/core/adapter_sanity.py; every refusal is an
`AdapterRefused` naming its check.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from dataclasses import dataclass

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from bot.core.adapter_sanity import AdapterRefused, check_static

# Defined beside the generation protocol, so front ends catch it without importing torch.
from bot.core.generation import AdapterLoadError

FORMAT = "lbot-lora-1"
# The names of the checks made here.
UNREADABLE, WRONG_SHAPES, OTHER_BASE = "unreadable file", "wrong shapes", "another base model"
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(LoraConfig)} - {"peft_type"}


@dataclass(frozen=True)
class ParsedAdapter:
    config: LoraConfig
    tensors: dict[str, torch.Tensor]
    base_model: str


def lora_config(settings) -> LoraConfig:
    """The LoRA shape from settings (GPT-2's Conv1D layers need fan_in_fan_out)."""
    return LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha,
                      lora_dropout=settings.lora_dropout,
                      target_modules=settings.lora_target_modules, fan_in_fan_out=True,
                      task_type="CAUSAL_LM")


def serialize_adapter(model: PeftModel, adapter_name: str, base_model: str) -> bytes:
    """One adapter of a peft model as safetensors bytes, config and base model inside."""
    config = model.peft_config[adapter_name].to_dict()
    config_json = json.dumps(config, default=lambda o: sorted(o) if isinstance(o, set) else str(o))
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    tensors = {key: value.detach().to("cpu", torch.float32).contiguous()
               for key, value in state.items()}
    return save_safetensors(tensors, metadata={"format": FORMAT, "lora_config": config_json,
                                               "base_model": base_model})


def _metadata(blob: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors header (its first 8 bytes give the header length)."""
    if len(blob) < 8:
        raise AdapterRefused(UNREADABLE, "adapter bytes are too short to be safetensors")
    (length,) = struct.unpack("<Q", blob[:8])
    if length > len(blob) - 8:
        raise AdapterRefused(UNREADABLE, "adapter bytes are truncated (safetensors header runs "
                                         "past the end)")
    try:
        header = json.loads(blob[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AdapterRefused(UNREADABLE, "adapter bytes have no readable safetensors "
                                         "header") from None
    if not isinstance(header, dict):
        raise AdapterRefused(UNREADABLE, "adapter bytes have no readable safetensors header")
    return header.get("__metadata__") or {}


def parse_adapter(blob: bytes, model_name: str | None = None) -> ParsedAdapter:
    """Read adapter bytes (safetensors only) and run the static checks; raises AdapterRefused
    (an AdapterLoadError) when they are unusable, or (given `model_name`) were trained on
    another base model."""
    metadata = _metadata(blob)
    if metadata.get("format") != FORMAT:
        raise AdapterRefused(UNREADABLE, "not an adapter of this project "
                                         f"(format {metadata.get('format')!r})")
    try:
        tensors = load_safetensors(blob)
    except Exception as error:  # safetensors raises its own error types for damaged data
        raise AdapterRefused(UNREADABLE, f"adapter tensors cannot be read: {error}") from None
    try:
        fields = json.loads(metadata["lora_config"])
        config = LoraConfig(**{k: v for k, v in fields.items() if k in _CONFIG_FIELDS})
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise AdapterRefused(UNREADABLE, f"adapter config is unreadable: {error}") from None
    if not tensors:
        raise AdapterRefused(UNREADABLE, "adapter holds no tensors")
    unknown = {k: v for k, v in fields.items() if k not in _CONFIG_FIELDS | {"peft_type"}}
    base_model = metadata.get("base_model", "")
    if model_name is not None and base_model != model_name:
        raise AdapterRefused(OTHER_BASE, f"adapter was trained on base model {base_model!r}, "
                                         f"this model is {model_name!r}" if base_model else
                             "adapter does not say which base model it was trained on")
    check_static(config, tensors, unknown)
    return ParsedAdapter(config=config, tensors=tensors, base_model=base_model)


def attach_adapter(model, parsed: ParsedAdapter, adapter_name: str):
    """Add `parsed` to `model` under `adapter_name`; returns the (peft) model.

    A plain transformers model is wrapped with peft first. Every tensor must land on a LoRA
    weight of the right shape, else the half-added adapter is removed and AdapterLoadError says
    what did not fit.
    """
    if isinstance(model, PeftModel):
        if adapter_name in model.peft_config:
            raise AdapterLoadError(f"an adapter named {adapter_name!r} is already loaded")
        try:
            model.add_adapter(adapter_name, parsed.config)
        except ValueError as error:
            raise AdapterRefused(WRONG_SHAPES, f"adapter does not fit this model: {error}") \
                from None
    else:
        try:
            model = get_peft_model(model, parsed.config, adapter_name=adapter_name)
        except ValueError as error:
            raise AdapterRefused(WRONG_SHAPES, f"adapter does not fit this model: {error}") \
                from None
    try:
        result = set_peft_model_state_dict(model, parsed.tensors, adapter_name=adapter_name)
        unexpected = list(result.unexpected_keys)
        missing = [k for k in result.missing_keys if f".{adapter_name}." in k and "lora_" in k]
        if unexpected or missing:
            raise AdapterRefused(WRONG_SHAPES, f"adapter weights do not match this model "
                                               f"(unexpected: {unexpected[:2]}, missing: "
                                               f"{missing[:2]})")
    except (RuntimeError, AdapterLoadError) as error:
        model.delete_adapter(adapter_name)
        if isinstance(error, AdapterLoadError):
            raise
        raise AdapterRefused(WRONG_SHAPES, f"adapter weights do not fit this model: "
                                           f"{str(error).splitlines()[0][:300]}") from None
    return model


def wrap_for_adapters(model, target_modules: tuple[str, ...] | list[str]):
    """`model` wrapped by peft with no adapter loaded (its LoRA layers then add nothing).

    Wrapping once up front means every adapter is attached the same way, with `add_adapter`,
    and a refused one is removed cleanly; wrapping a plain model is the step that cannot be
    undone when the adapter then fails to load.
    """
    if isinstance(model, PeftModel):
        return model
    placeholder = "engine_placeholder"
    # GPT-2's Conv1D layers need fan_in_fan_out; the real adapters bring their own shapes.
    config = LoraConfig(target_modules=list(target_modules), fan_in_fan_out=True,
                        task_type="CAUSAL_LM")
    wrapped = get_peft_model(model, config, adapter_name=placeholder)
    wrapped.delete_adapter(placeholder)
    return wrapped
