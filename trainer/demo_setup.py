"""What the offline demo finds or makes before it starts: a Redis server and a model.

Each piece says what it chose, so a new user sees why the demo runs without a token or internet.
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis

from bot.local_redis import LocalRedis
from bot.store import Store


async def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    client = aioredis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(await client.ping())
    except (aioredis.RedisError, OSError, ValueError):
        return False
    finally:
        await client.aclose()


@asynccontextmanager
async def demo_redis(url: str, say):
    """The Redis URL to use: `url` when a server answers there, else a private one."""
    if await redis_answers(url):
        say(f"Redis: using the server at REDIS_URL ({_without_password(url)})")
        yield url
        return
    say("Redis: nothing answers at REDIS_URL; starting a private redis-server in a temp dir")
    server = LocalRedis().start()
    try:
        yield server.url
    finally:
        server.close()


def _without_password(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def demo_prefix() -> str:
    """A key prefix of the demo's own, so it never mixes with a live bot's data."""
    return "demo-" + uuid.uuid4().hex[:8]


async def delete_prefix(store: Store) -> int:
    """Remove every key the demo wrote under its own prefix."""
    deleted = 0
    async for key in store.r.scan_iter(match=f"{store.prefix}:*", count=500):
        deleted += await store.r.delete(key)
    return deleted


def model_loads(name: str) -> bool:
    """Whether `name` loads without the network (a local directory or a cached hub model)."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
        AutoTokenizer.from_pretrained(name, local_files_only=True)
        return True
    except (OSError, ValueError):
        return False


def demo_model(name: str, cache_dir: Path, say) -> str:
    """`name` when it loads offline, else a tiny GPT-2 built (once) under `cache_dir`."""
    if model_loads(name):
        say(f"Model: {name}")
        return name
    from trainer.tiny_model import build_tiny_model

    target = cache_dir / "tiny-gpt2"
    if not (target / "model.safetensors").exists():
        say(f"Model: {name!r} cannot be loaded offline; building a tiny GPT-2 in {target}")
        build_tiny_model(target)
    else:
        say(f"Model: {name!r} cannot be loaded offline; using the tiny GPT-2 in {target}")
    return str(target)
