"""Short reads of the store that only tests need."""

from __future__ import annotations

from bot.store import Correction, Store


async def exchange_count(store: Store) -> int:
    return (await store.exchanges.stats())["total"]["exchanges"]


async def score(store: Store, exchange_id: str) -> int:
    return sum((await store.exchanges.ratings(exchange_id)).values())


async def corrections(store: Store, exchange_id: str) -> list[Correction]:
    raw = await store.r.hvals(store.k("co", exchange_id))
    return sorted((Correction.model_validate_json(c) for c in raw), key=lambda c: c.created_at)
