"""Loading the served model: torch's thread count, then the weights in the type MODEL_DTYPE
names or the measurement picks (model_dtype.py), int8 where asked (int8.py)."""

from __future__ import annotations

import logging

import torch

from bot.core.generation import GenerationConfig
from bot.engine.int8 import quantize_base
from bot.engine.model_dtype import choose_cpu_dtype, resolve_dtype

log = logging.getLogger(__name__)


def apply_threads(threads: int | None) -> None:
    """TORCH_THREADS: torch's intra-op threads for this process (None: torch's default, one
    per core). On a host shared with other work 1 is often faster: threads that wait for a busy
    core made a 1-row step 8.7x slower with 2 threads on a 2-core host (bench/README.md)."""
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        log.info("torch threads: %d", threads)


def load_serving_model(config: GenerationConfig):
    """(model, tokenizer) for `config`, the model on `config.device` in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    apply_threads(config.torch_threads)
    tokenizer = AutoTokenizer.from_pretrained(config.model_name)
    model = AutoModelForCausalLM.from_pretrained(
        config.model_name, dtype=resolve_dtype(config.dtype, config.device)).eval()
    on_cpu = torch.device(config.device).type == "cpu"
    if config.dtype == "int8":
        if not on_cpu:
            raise ValueError("MODEL_DTYPE=int8 is a CPU path: use auto, bfloat16 or float16 "
                             f"on {config.device}")
        quantize_base(model)
    elif config.dtype == "auto" and on_cpu:
        chosen, _ = choose_cpu_dtype(model, config.batch_max_size)
        model = model.to(getattr(torch, chosen))
    return model.to(config.device), tokenizer
