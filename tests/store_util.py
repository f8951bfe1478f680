"""Short reads of the store that only tests need, and the server most tests act in."""

from __future__ import annotations

import redis.asyncio as aioredis

from bot.core.store import Correction, Store

TENANT = 1  # HOME_GUILD_ID of the test settings: the console's server and that of DMs


async def exchange_count(store: Store, tenant: int = TENANT) -> int:
    return (await store.tenant(tenant).exchanges.stats())["total"]["exchanges"]


async def score(store: Store, exchange_id: str) -> int:
    return sum((await store.exchanges.ratings(exchange_id)).values())


def raw_redis(store: Store) -> aioredis.Redis:
    """The store's own Redis client, for tests that read stored bytes or expiries directly, or
    damage them; the product reaches Redis only through the store's methods."""
    return store._redis


async def corrections(store: Store, exchange_id: str) -> list[Correction]:
    raw = await raw_redis(store).hvals(store.keys("co", exchange_id))
    return sorted((Correction.model_validate_json(c) for c in raw), key=lambda c: c.created_at)
