"""The engine tests' settings and a started engine, shared by test_engine.py and
test_engine_scheduler.py (each asks for the reply length it relies on)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bot.engine.engine import Engine


def engine_settings(settings, **changes):
    """Greedy replies of 8 new tokens and a 30 ms batching wait, `changes` on top."""
    base = dict(temperature=0.0, max_new_tokens=8, batch_max_wait_ms=30)
    return settings.model_copy(update={**base, **changes})


@contextlib.asynccontextmanager
async def running_engine(settings) -> AsyncIterator[Engine]:
    engine = Engine.from_settings(settings)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()
