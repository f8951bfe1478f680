"""Deleting one server's (tenant's) data: an operator act, never a Discord command.

Exchanges are found by their tenant field (a full scan: this is rare and offline work), then
deleted with their ratings, corrections and message indexes; the tenant's adapters (bytes,
records, reports), its own keys (rated index, counters, rating events, registry pointer and
history, trainer state, mod-log channel) and its server style go too. Bots are told through an
adapter event, so they stop serving its adapter at once.
"""

from __future__ import annotations

import json

from bot.generation import BASE_VERSION
from bot.store.records import AdapterEvent

CHUNK = 500


async def wipe_tenant(store, tenant: int) -> dict[str, int]:
    """Delete everything of `tenant`; returns how many exchanges and adapters went."""
    r, k, own = store.r, store.keys, store.keys.of(tenant)
    exchanges = 0
    keys = [key async for key in r.scan_iter(match=k("ex", "*"), count=CHUNK)
            if key.decode().count(":") == 2]
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start:start + CHUNK]
        raws = await r.mget(chunk)
        async with r.pipeline(transaction=True) as pipe:
            for key, raw in zip(chunk, raws, strict=True):
                if raw is None or json.loads(raw).get("tenant") != tenant:
                    continue
                exchange = json.loads(raw)
                exchanges += 1
                pipe.delete(key, k.ratings(exchange["id"]), k.corrections(exchange["id"]))
                if exchange.get("message_id") is not None:
                    pipe.delete(k.message(exchange["message_id"]))
                if exchange.get("user_hash"):
                    pipe.zrem(k.user_exchanges(exchange["user_hash"]), exchange["id"])
            await pipe.execute()
    versions = [v.decode() for v in await r.zrange(own.adapters, 0, -1)]
    async with r.pipeline(transaction=True) as pipe:
        for version in versions:
            pipe.delete(*(k.adapter(version, part) for part in ("meta", "blob", "report", "plot")))
        pipe.delete(own.rated, own.stats, own.rating_events, own.adapters, own.active,
                    own.history, own.modlog, k.style("guild", tenant),
                    *(own.trainer(part) for part in ("cursor", "lock", "request", "runs")))
        pipe.srem(k.tenants, tenant)
        event = AdapterEvent(kind="activated", tenant=tenant, version=BASE_VERSION,
                             previous="wiped")
        pipe.publish(k.adapter_events, event.model_dump_json())
        await pipe.execute()
    if await store.registry.default_tenant() == tenant:
        await r.delete(k.default_tenant)
    return {"exchanges": exchanges, "adapters": len(versions)}
