"""What the offline demo finds or makes before it starts: a Redis server and a model.

Each piece says what it chose, so a new user sees why the demo runs without a token or internet.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from redis.exceptions import RedisError

from bot.core.local_redis import LocalRedis
from bot.core.store.client import connect


async def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    try:
        client = connect(url, max_connections=2, pool_timeout_s=timeout_s,
                         socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    except ValueError:
        return False
    try:
        return bool(await client.ping())
    except (RedisError, OSError, ValueError):
        return False
    finally:
        await client.aclose()


@asynccontextmanager
async def demo_redis(settings, say):
    """The Redis URL to use: REDIS_URL when a server answers there, else a private one."""
    if await redis_answers(settings.redis_url):
        say(f"Redis: using the server at REDIS_URL ({settings.redis_address})")
        yield settings.redis_url
        return
    say("Redis: nothing answers at REDIS_URL; starting a private redis-server in a temp dir")
    server = LocalRedis().start()
    try:
        yield server.url
    finally:
        server.close()


def demo_prefix() -> str:
    """A key prefix of the demo's own, so it never mixes with a live bot's data."""
    return "demo-" + uuid.uuid4().hex[:8]


def model_loads(name: str) -> bool:
    """Whether `name` loads without the network (a local directory or a cached hub model)."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
        AutoTokenizer.from_pretrained(name, local_files_only=True)
        return True
    except (OSError, ValueError):
        return False


# The demo's own tiny GPT-2 (the test suite's stays at build_tiny_model's defaults): big enough
# to learn something from the sample dialogues in a minute of CPU time, small enough to build fast.
DEMO_MODEL = {"vocab_size": 1500, "n_layer": 4, "n_head": 4, "n_embd": 128}
PRETRAIN_STEPS = {"full": 400, "quick": 200}
MODEL_DIR = "tiny-gpt2"
RECIPE_FILE = "demo_recipe.json"  # what the cached model was built from; another recipe rebuilds


def demo_model(name: str, cache_dir: Path, say, *, quick: bool = False) -> str:
    """`name` when it loads offline, else the demo's tiny GPT-2 in `cache_dir`."""
    if model_loads(name):
        say(f"Model: {name}")
        return name
    return tiny_demo_model(cache_dir, say, steps=PRETRAIN_STEPS["quick" if quick else "full"],
                           instead_of=name)


def demo_recipe(text: str, steps: int) -> dict:
    """What the demo's tiny model is made of: its shape, its pretraining, and a digest of
    `text`, which its tokenizer and weights learn from. Another recipe makes another model."""
    from trainer.demo.pretrain import PRETRAINING

    return {**DEMO_MODEL, **PRETRAINING, "pretrain_steps": steps,
            "text_sha256": hashlib.sha256(text.encode()).hexdigest()}


def recipe_digest(recipe: dict) -> str:
    """A short name for `recipe`, for a cache that must change exactly when the recipe does."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def tiny_demo_model(cache_dir: Path, say, *, steps: int, instead_of: str | None = None) -> str:
    """The demo's tiny GPT-2 in `cache_dir`/MODEL_DIR: the one there when it was made from
    the same recipe, else one built and pretrained there now for `steps` steps (said, with
    the model it stands in for)."""
    from trainer.demo.pretrain import CORPUS, pretrain_text

    text = pretrain_text()
    recipe = demo_recipe(text, steps)
    target = cache_dir / MODEL_DIR
    lead = "Model: " if instead_of is None else \
        f"Model: {instead_of!r} cannot be loaded offline; "
    if _cached(target, recipe):
        say(f"{lead}using the tiny GPT-2 in {target} ({_parameters(target)}, pretrained earlier "
            f"for {steps} steps on text kept in the repo, none of the sample answers)")
        return str(target)
    say(f"{lead}building a tiny GPT-2 in {target} and pretraining it for {steps} steps on "
        f"trainer/{CORPUS} and the sample questions (everyday English and Chinese text "
        "written for the demo, none of the sample answers; no download)")
    result = _build_and_pretrain(target, text, steps)
    (target / RECIPE_FILE).write_text(json.dumps({**recipe, "loss": [result.first_loss,
                                                                      result.last_loss]}))
    say(f"  pretrained its {_parameters(target)} in {result.seconds:.0f} s: training loss "
        f"{result.first_loss:.2f} -> {result.last_loss:.2f}. It strings words together "
        "now, but has never seen a support answer.")
    return str(target)


def _cached(target: Path, recipe: dict) -> bool:
    try:
        saved = json.loads((target / RECIPE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (target / "model.safetensors").exists() and \
        {k: saved.get(k) for k in recipe} == recipe


def _parameters(target: Path) -> str:
    from safetensors import safe_open

    with safe_open(target / "model.safetensors", "pt") as weights:
        count = sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())
    return f"{count / 1e6:.1f}M parameters"


def _build_and_pretrain(target: Path, text: str, steps: int):
    from tqdm import tqdm

    from trainer.demo.pretrain import PRETRAINING, pretrain
    from trainer.demo.tiny_model import build_tiny_model

    (target / RECIPE_FILE).unlink(missing_ok=True)  # a run cut short leaves no valid recipe
    build_tiny_model(target, **DEMO_MODEL, corpus=text)
    bar = tqdm(total=steps, desc="pretraining", leave=False, file=sys.stderr,
               disable=not sys.stderr.isatty())
    lines = None if sys.stderr.isatty() else ProgressLines(steps)  # to a file or a pipe

    def on_step(step: int, loss: float) -> None:
        bar.update()
        bar.set_postfix(loss=f"{loss:.2f}")
        if lines is not None:
            lines.step(step, loss)

    try:
        return pretrain(target, text, steps=steps, on_step=on_step, **PRETRAINING)
    finally:
        bar.close()


class ProgressLines:
    """Pretraining progress where no bar can show (output to a file or a pipe): a line at most
    every `every_s` seconds and at the last step, so a slow machine is seen to be working."""

    def __init__(self, steps: int, every_s: float = 30.0, out=None, clock=time.monotonic):
        self.steps, self.every_s, self.clock = steps, every_s, clock
        self.out = out or sys.stdout
        self.started = self.last = clock()

    def step(self, step: int, loss: float) -> None:
        now = self.clock()
        if now - self.last < self.every_s and step < self.steps:
            return
        self.last = now
        print(f"  pretraining: step {step}/{self.steps}, loss {loss:.2f}, "
              f"{now - self.started:.0f} s", file=self.out, flush=True)
