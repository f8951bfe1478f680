"""Making real LoRA adapter blobs for tests: peft on the tiny model, weights set by hand.

A fresh LoRA B matrix is zero (the adapter changes nothing), so `make_adapter_bytes` fills the
adapter with seeded random values large enough that greedy output differs from the base model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM

from bot.core.adapter_io import lora_config, serialize_adapter


def make_adapter_bytes(model_dir: str | Path, settings, *, seed: int = 1, scale: float = 0.5,
                       base_model: str | None = None) -> bytes:
    """A safetensors adapter blob for the model in `model_dir` with non-zero LoRA weights.

    `base_model` is the name written into the blob (default: `model_dir` as given, which is
    what an engine loaded from that directory calls its model).
    """
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    peft_model = get_peft_model(model, lora_config(settings), adapter_name="x")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if ".lora_A.x." in name or ".lora_B.x." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return serialize_adapter(peft_model, "x", base_model or str(model_dir))
