"""The engine tests' settings, adapter source, a started engine, a slowed one and streams
across hot swaps, shared by test_engine.py, test_engine_scheduler.py and test_engine_int8.py
(each asks for the reply length it relies on)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from bot.core.generation import AdapterSource
from bot.core.store import UnknownAdapter
from bot.engine.engine import Engine


def engine_settings(settings, **changes):
    """Greedy replies of 8 new tokens and a 30 ms batching wait, `changes` on top."""
    base = dict(temperature=0.0, max_new_tokens=8, batch_max_wait_ms=30)
    return settings.model_copy(update={**base, **changes})


def blob_source(blobs: dict[str, bytes]) -> AdapterSource:
    """Adapters from `blobs` (version -> bytes; a test may add to it), as the registry gives
    them: a version it lacks is unknown."""
    async def source(version: str) -> bytes:
        if version not in blobs:
            raise UnknownAdapter(f"adapter {version} is not in the registry")
        return blobs[version]
    return source


@contextlib.asynccontextmanager
async def running_engine(settings, blobs: dict[str, bytes] | None = None
                         ) -> AsyncIterator[Engine]:
    engine = Engine.from_settings(settings, blob_source(blobs if blobs is not None else {}))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


async def swap_through(engine: Engine, serving: dict, versions=("v1", "v2", "base", "v1", "v2"),
                       pause_s: float = 0.04) -> None:
    """Move `serving["version"]` (a server's table) through `versions`, one every `pause_s`,
    each loaded before it serves, as the router does."""
    for version in versions:
        await asyncio.sleep(pause_s)
        if version != "base":
            await engine.load(version)
        serving["version"] = version


def slow_down(engine: Engine, seconds: float):
    """Each forward pass takes at least `seconds`, so steps outlast the event loop's work."""
    first_block = next(m for name, m in engine.model.named_modules() if name.endswith(".h.0"))
    return first_block.register_forward_pre_hook(lambda module, args: time.sleep(seconds))


async def collect(stream) -> list[str]:
    return [piece async for piece in stream]


async def stream_across_swaps(engine: Engine, turns, rows: int = 40) -> list:
    """`rows` streams of `turns` started 10 ms apart, each on the version serving when it
    starts, while `swap_through` moves that version (forward passes slowed, so rows overlap
    the loads); (pieces, generation) per row. Any failed row raises."""
    serving = {"version": "base"}
    hook = slow_down(engine, 0.002)

    async def one(delay: float):
        await asyncio.sleep(delay)
        stream = engine.stream(turns, adapter=serving["version"])
        pieces = await collect(stream)
        return pieces, stream.generation

    try:
        tasks = [asyncio.create_task(one(i * 0.01)) for i in range(rows)]
        await swap_through(engine, serving)
        return await asyncio.gather(*tasks)
    finally:
        hook.remove()
