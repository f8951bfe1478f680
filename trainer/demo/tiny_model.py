"""A tiny GPT-2 built offline: tests and the demo load it with `from_pretrained` like `gpt2`.

The tokenizer is a byte-level BPE trained with `tokenizers` on text kept in the repo (English
and Chinese); the weights are random (seeded), so nothing is downloaded from a hub.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

EOS = "<|endoftext|>"


def corpus_text() -> str:
    return resources.files("trainer").joinpath("data/tokenizer_corpus.txt").read_text("utf-8")


def build_tiny_model(directory: str | Path, *, vocab_size: int = 1000, n_layer: int = 2,
                     n_head: int = 2, n_embd: int = 64, n_positions: int = 256,
                     initializer_range: float = 0.02, seed: int = 0,
                     corpus: str | None = None) -> Path:
    """Write a tiny GPT-2 (config, safetensors weights, tokenizer) into `directory`.

    The tokenizer learns from `corpus` (default: the repo's tokenizer corpus).
    """
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    bpe = ByteLevelBPETokenizer()
    lines = (corpus or corpus_text()).splitlines()
    bpe.train_from_iterator(lines, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                            show_progress=False)
    tokenizer = GPT2Tokenizer(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                              model_max_length=n_positions)
    tokenizer.save_pretrained(directory)

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd,
                        n_layer=n_layer, n_head=n_head,
                        initializer_range=initializer_range, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    return directory
