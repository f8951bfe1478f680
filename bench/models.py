"""The models the serving benches run on, built here (nothing is downloaded), and the temporary
folder they are built in."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where the test suite keeps the demo's pretrained tiny model (tests/conftest.py): shared.
PRETRAINED_CACHE = ROOT / ".cache" / "pretrained"


def build_model_dir(workdir: Path) -> str:
    """GPT-2 small with random weights and a tokenizer covering its vocabulary, on disk: the
    tiny offline tokenizer, its vocabulary filled up to the model's with placeholder words so
    that every generated token has text to stream."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from trainer.demo.tiny_model import build_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(str(build_tiny_model(workdir / "tokenizer")))
    config = GPT2Config(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    tokenizer.add_tokens([f" w{i}" for i in range(len(tokenizer), config.vocab_size)])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    directory = workdir / "gpt2-small-random"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def pretrained_demo_model(say=print) -> str:
    """The demo's tiny GPT-2 pretrained as `make demo --quick` does (cached under
    .cache/pretrained by its recipe, as the tests cache it; built there when missing, ~3 min)."""
    from trainer.demo.prepare import PRETRAIN_STEPS, demo_recipe, recipe_digest, tiny_demo_model
    from trainer.demo.pretrain import pretrain_text

    steps = PRETRAIN_STEPS["quick"]
    home = PRETRAINED_CACHE / recipe_digest(demo_recipe(pretrain_text(), steps))
    return tiny_demo_model(home, say, steps=steps)


def run_in_workdir(run, args, prefix: str) -> int:
    """`asyncio.run(run(args, workdir))` in a new temporary folder (the built models go there),
    removed at the end whatever happens."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return asyncio.run(run(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
