"""Deleting one server's (tenant's) data: an operator act, never a Discord command.

Exchanges are found by their tenant field (a full scan: this is rare and offline work), then
deleted with their ratings, corrections and every index entry that finds them; the tenant's
adapters (bytes, records, reports), its own keys (rated index, counters, rating events,
registry pointer, history and refusal, trainer state, mod-log channel, distrusted
moderators, review queue, exam pins, canary, recent exchanges and channel indexes) and its
server style go too.
Bots are told through an adapter event, so they stop serving its adapter at once.
"""

from __future__ import annotations

import json

from bot.core.generation import BASE_VERSION
from bot.core.store.records import AdapterEvent, Exchange

CHUNK = 500


async def wipe_tenant(store, tenant: int) -> dict[str, int]:
    """Delete everything of `tenant`; returns how many exchanges and adapters went."""
    r, k, own = store._redis, store.keys, store.keys.of(tenant)
    exchanges = 0
    keys = [key async for key in r.scan_iter(match=k("ex", "*"), count=CHUNK)
            if key.decode().count(":") == 2]
    for start in range(0, len(keys), CHUNK):
        raws = await r.mget(keys[start:start + CHUNK])
        mine = [Exchange.model_validate_json(raw) for raw in raws
                if raw is not None and json.loads(raw).get("tenant") == tenant]
        # Each with its ratings, corrections and every index entry that finds it.
        exchanges += await store.exchanges.forget(mine)
    # Channel indexes may still name exchanges that expired (pruned only as they are written).
    channels = [key async for key in r.scan_iter(match=own.channel_exchanges("*"), count=CHUNK)]
    versions = [v.decode() for v in await r.zrange(own.adapters, 0, -1)]
    async with r.pipeline(transaction=True) as pipe:
        for version in versions:
            pipe.delete(*(k.adapter(version, part) for part in ("meta", "blob", "report", "plot")))
        pipe.delete(own.rated, own.stats, own.rating_events, own.adapters, own.active,
                    own.history, own.refused, own.modlog, k.style("guild", tenant),
                    own.distrusted, own.review("items"), own.review("pending"), own.exam_pins,
                    own.canary, own.recent_exchanges, *channels,
                    *(own.trainer(part) for part in ("cursor", "lock", "request", "runs")))
        pipe.srem(k.tenants, tenant)
        event = AdapterEvent(kind="activated", tenant=tenant, version=BASE_VERSION,
                             previous="wiped")
        pipe.publish(k.adapter_events, event.model_dump_json())
        await pipe.execute()
    if await store.registry.default_tenant() == tenant:
        await r.delete(k.default_tenant)
    return {"exchanges": exchanges, "adapters": len(versions)}
