"""Store writes that are safe to repeat, tried again while the store is unavailable.

A short outage (a Redis failover, a pool briefly exhausted) should not lose a rating or an
exchange: the write is tried again after each pause in RETRY_DELAYS_S, then the last
StoreUnavailable is raised for the caller to answer.
"""

from __future__ import annotations

import asyncio
import logging

from bot.core.store import StoreUnavailable

log = logging.getLogger(__name__)

# A write the store could not take is tried again after these pauses (seconds) before it fails.
RETRY_DELAYS_S = (0.2, 1.0)


async def with_retries(write, what: str):
    """`await write()`, tried again after RETRY_DELAYS_S while the store is unavailable; the
    last StoreUnavailable is raised. Only for writes that are safe to repeat."""
    for delay in RETRY_DELAYS_S:
        try:
            return await write()
        except StoreUnavailable as error:
            log.info("%s: the store is unavailable (%s); trying again in %.1f s", what, error,
                     delay)
            await asyncio.sleep(delay)
    return await write()
