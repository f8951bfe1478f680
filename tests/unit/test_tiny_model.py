"""The offline tiny GPT-2 loads with from_pretrained exactly like `gpt2`, and generates."""

from __future__ import annotations

import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_model_loads_and_generates(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "gpt2"
    assert tokenizer.eos_token == "<|endoftext|>"
    for text in ("Hello, I need help.", "你好，我需要帮助。"):
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text  # byte-level BPE: lossless, Chinese included
    inputs = tokenizer("<user> Hello\n<bot>", return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
    assert out.shape[1] == inputs.input_ids.shape[1] + 5


def test_cli_writes_a_loadable_model(tmp_path):
    target = tmp_path / "tiny"
    result = subprocess.run([sys.executable, "-m", "trainer", "init-tiny-model", str(target)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (target / "model.safetensors").exists()
    assert AutoModelForCausalLM.from_pretrained(target).config.n_layer == 2
