"""Waiting in tests for something another task does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Return once `predicate()` holds; fail after `timeout` seconds (a hang, not slowness)."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"condition not reached in {timeout:g} s") from None
