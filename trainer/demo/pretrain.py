"""A short full-parameter pretraining of the demo's tiny GPT-2, so the base model speaks a little.

A random GPT-2 only babbles bytes, and LoRA on top of it cannot show that the loop learns. The
demo therefore trains its tiny model for a fixed number of steps on text kept in the repo:
trainer/data/pretrain_corpus.txt (everyday English and Chinese sentences, a made-up story of a
small web shop and a little small talk, all written for the demo) plus the user side of the
sample dialogues. It holds none of the sample answers (tests/integration/test_demo.py checks
that). The tokenizer is trained on the same text, so every token the model knows has been
trained.
Random windows of the tokenized text, AdamW with a warm-up and a cosine decay, seeded.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

CORPUS = "data/pretrain_corpus.txt"
SAMPLES = "data/customer_service.jsonl"
# The demo's choices for `pretrain`: part of its model's recipe, so a change rebuilds the model.
PRETRAINING = {"seq_len": 64, "batch_size": 16, "learning_rate": 3e-3, "seed": 0}


def pretrain_text() -> str:
    """The demo's pretraining text: the corpus file and the sample questions (no answers)."""
    from trainer.importer import read_rows

    data = resources.files("trainer")
    corpus = data.joinpath(CORPUS).read_text("utf-8")
    samples = read_rows(data.joinpath(SAMPLES).read_text("utf-8"))
    questions = [f"<user> {row['input']}" for _, row in samples]
    return corpus.rstrip("\n") + "\n" + "\n".join(questions) + "\n"


@dataclass(frozen=True)
class PretrainResult:
    steps: int
    tokens: int  # tokens in the corpus
    first_loss: float  # mean of the first few steps' training loss
    last_loss: float  # mean of the last few steps' training loss
    seconds: float


def token_stream(tokenizer, text: str) -> list[int]:
    """Every non-empty line as tokens, each ended by end-of-text (as a reply is)."""
    ids: list[int] = []
    for line in text.splitlines():
        if line.strip():
            ids += tokenizer.encode(line.strip(), add_special_tokens=False)
            ids.append(tokenizer.eos_token_id)
    return ids


def pretrain(directory: str | Path, text: str, *, steps: int, seq_len: int, batch_size: int,
             learning_rate: float, seed: int,
             on_step: Callable[[int, float], None] | None = None) -> PretrainResult:
    """Train every weight of the GPT-2 in `directory` on `text` and save it back there."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    directory = Path(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    stream = torch.tensor(token_stream(tokenizer, text))
    if len(stream) <= seq_len:
        raise ValueError(f"the pretraining text has {len(stream)} tokens, fewer than a window")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01,
                                  betas=(0.9, 0.95))
    warmup = max(1, steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return learning_rate * (step + 1) / warmup
        done = (step - warmup) / max(1, steps - warmup)
        return learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done)))

    model.train()
    losses: list[float] = []
    for step in range(steps):
        starts = [rng.randrange(len(stream) - seq_len) for _ in range(batch_size)]
        batch = torch.stack([stream[s:s + seq_len] for s in starts])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, losses[-1])
    model.eval()
    model.save_pretrained(directory)
    window = max(1, min(10, steps // 5))
    return PretrainResult(steps=steps, tokens=len(stream),
                          first_loss=sum(losses[:window]) / window,
                          last_loss=sum(losses[-window:]) / window,
                          seconds=time.perf_counter() - started)
