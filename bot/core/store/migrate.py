"""Schema 1 -> 2, once: one global registry and training set become the home server's tenant.

Schema 1 kept one adapter registry, one rating stream and one trainer state for every server.
Schema 2 keeps them per tenant (bot/core/store/keys.py). Moving:
- each exchange gets its tenant (its server; a DM's: HOME_GUILD_ID), its tenant's counters and,
  when rated or corrected, its tenant's rated index;
- the adapter registry (versions, active pointer, history), the rating stream and the trainer
  state become HOME_GUILD_ID's, so the adapter that served before serves the home server (and,
  as the default adapter, every server without its own);
- user indexes of the first schema-1 layout (sets) become expiring sorted sets.
The first process to start migrates under a lock; the others wait for it. Without
HOME_GUILD_ID the data has no tenant to go to: the migration refuses and says so.

`index_channels` puts exchanges stored before the channel index (keys.py) into it, once
(repeating it changes nothing, so processes starting together need no lock).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict

from bot.core.store.keys import SCHEMA_VERSION
from bot.core.store.records import StoreError

log = logging.getLogger(__name__)

LOCK_S = 600
WAIT_S = 120
CHUNK = 500


async def migrate_from_1(store) -> None:
    r, k = store._redis, store.keys
    if not await r.set(k("migrating"), b"1", nx=True, ex=LOCK_S):
        await _wait_for_other(store)
        return
    try:
        home = store.home_tenant
        shared = [k("ad", "all"), k("ad", "active"), k("ad", "history"), k("ev", "ratings"),
                  k("rated"), k("tr", "cursor")]
        if home is None and await r.exists(*shared):
            raise StoreError("this Redis holds adapters or ratings of schema 1, kept for every "
                             "server at once; set HOME_GUILD_ID to the server they belong to "
                             "and start again (they move there, and its adapter stays the "
                             "default for the other servers)")
        await _exchanges(store, home)
        await _user_indexes(store)
        if home is not None:
            await _shared_state(store, home)
        await r.delete(k("ex", "all"), k("rated"), k("stats"))
        await r.set(k("schema"), SCHEMA_VERSION)
        log.info("moved Redis data under %r from schema 1 to %d (home server %s)",
                 store.prefix, SCHEMA_VERSION, home)
    finally:
        await r.delete(k("migrating"))


async def _wait_for_other(store) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if int(await store._redis.get(store.keys("schema")) or 0) == SCHEMA_VERSION:
            return
        await asyncio.sleep(0.5)
    raise StoreError("another process is moving this Redis to the new schema; try again soon")


async def _scan(r, pattern: str) -> list[bytes]:
    return [key async for key in r.scan_iter(match=pattern, count=CHUNK)]


async def _exchanges(store, home: int | None) -> None:
    """Give every exchange its tenant, and rebuild each tenant's counters and rated index."""
    r, k = store._redis, store.keys
    keys = [key for key in await _scan(r, k("ex", "*"))
            if key.decode().count(":") == 2 and key != k("ex", "all").encode()]
    stats: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rated: dict[int, dict[str, float]] = defaultdict(dict)
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start:start + CHUNK]
        async with r.pipeline(transaction=False) as pipe:
            for key in chunk:
                exchange_id = key.decode().rsplit(":", 1)[1]
                pipe.get(key)
                pipe.hvals(k.ratings(exchange_id))
                pipe.hlen(k.corrections(exchange_id))
                pipe.zscore(k("rated"), exchange_id)
            replies = await pipe.execute()
        async with r.pipeline(transaction=False) as pipe:
            for index, key in enumerate(chunk):
                raw, votes, corrections, rated_at = replies[4 * index:4 * index + 4]
                if raw is None:
                    continue  # expired meanwhile
                exchange = json.loads(raw)
                tenant = exchange.get("guild_id") or home
                exchange["tenant"] = tenant
                pipe.set(key, json.dumps(exchange), xx=True, keepttl=True)
                if tenant is None:
                    continue
                version, counts = exchange.get("adapter_version", "base"), stats[tenant]
                counts["exchanges"] += 1
                counts[f"{version}:exchanges"] += 1
                counts[f"{version}:rated"] += bool(votes)
                counts[f"{version}:positive"] += sum(int(v) for v in votes) > 0
                counts["corrections"] += corrections
                if votes or corrections:
                    rated[tenant][exchange["id"]] = rated_at or exchange.get("created_at", 0)
            await pipe.execute()
    async with r.pipeline(transaction=True) as pipe:
        for tenant, counts in stats.items():
            pipe.hset(k.of(tenant).stats, mapping=dict(counts))
            pipe.sadd(k.tenants, tenant)
        for tenant, members in rated.items():
            pipe.zadd(k.of(tenant).rated, members)
        await pipe.execute()


async def _user_indexes(store) -> None:
    """The first schema-1 layout kept a plain set per user: make it the expiring sorted set."""
    r, k = store._redis, store.keys
    now = time.time()
    for key in await _scan(r, k("ex", "user", "*")):
        if (await r.type(key)) != b"set":
            continue
        ids = [member.decode() for member in await r.smembers(key)]
        async with r.pipeline(transaction=False) as pipe:
            for exchange_id in ids:
                pipe.ttl(k.exchange(exchange_id))
            ttls = await pipe.execute()
        members = {i: (float("inf") if ttl == -1 else now + ttl)
                   for i, ttl in zip(ids, ttls, strict=True) if ttl != -2}
        async with r.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if members:
                pipe.zadd(key, members)
                if float("inf") not in members.values():
                    pipe.expire(key, max(1, int(max(members.values()) - now)))
            await pipe.execute()


async def _shared_state(store, home: int) -> None:
    """The one registry, rating stream and trainer state become the home tenant's."""
    r, k, own = store._redis, store.keys, store.keys.of(home)
    moves = [(k("ad", "all"), own.adapters), (k("ad", "active"), own.active),
             (k("ad", "history"), own.history), (k("ev", "ratings"), own.rating_events)]
    moves += [(k("tr", part), own.trainer(part)) for part in ("cursor", "lock", "request", "runs")]
    for old, new in moves:
        if await r.exists(old):
            await r.rename(old, new)
    for version in [v.decode() for v in await r.zrange(own.adapters, 0, -1)]:
        raw = await r.get(k.adapter(version, "meta"))
        if raw is not None:
            record = json.loads(raw)
            record["tenant"] = home
            await r.set(k.adapter(version, "meta"), json.dumps(record))
    if await r.zcard(own.adapters):
        await r.sadd(k.tenants, home)


async def index_channels(store) -> int:
    """Index every exchange by its channel (and a thread's parent), scored with its expiry as
    the store does; marks it done. Returns how many exchanges were indexed."""
    r, k = store._redis, store.keys
    now, touched, count = time.time(), set(), 0
    keys = [key for key in await _scan(r, k("ex", "*")) if key.decode().count(":") == 2]
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start:start + CHUNK]
        async with r.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.get(key)
                pipe.ttl(key)
            replies = await pipe.execute()
        async with r.pipeline(transaction=False) as pipe:
            for raw, ttl in zip(replies[::2], replies[1::2], strict=True):
                exchange = json.loads(raw) if raw is not None else {}
                if exchange.get("tenant") is None or ttl == -2:
                    continue
                own = k.of(exchange["tenant"])
                for channel_id in {exchange.get("channel_id"), exchange.get("parent_id")} - {None}:
                    touched.add(own.channel_exchanges(channel_id))
                    pipe.zadd(own.channel_exchanges(channel_id),
                              {exchange["id"]: float("inf") if ttl == -1 else now + ttl})
                count += 1
            await pipe.execute()
    for key in touched:  # the index lives as long as its longest-lived exchange
        [(_, latest)] = await r.zrevrange(key, 0, 0, withscores=True)
        if latest == float("inf"):
            await r.persist(key)
        else:
            await r.expire(key, max(1, int(latest - now) + 1))
    await r.set(k("indexed", "channels"), b"1")
    return count
