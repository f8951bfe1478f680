"""Schema 1 (one registry and training set for every server) moves to per-server tenants once."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import redis.asyncio as aioredis

from bot.core.store import Store, StoreError
from bot.engine.engine import Engine
from bot.service.follow import AdapterRouter

HOME, OTHER = 10, 20


async def write_schema_1(r, prefix: str, blob: bytes, base_model: str) -> None:
    """Keys as the schema-1 code wrote them: one adapter active for every server, exchanges of
    two servers and a console one (no guild), a rated and a corrected one, a user index set."""
    def k(*parts):
        return ":".join([prefix, *map(str, parts)])

    now = time.time()
    exchanges = [
        {"id": "a", "guild_id": HOME, "user_message": "hi", "reply": "hello",
         "adapter_version": "v1", "user_hash": "u1", "created_at": now},
        {"id": "b", "guild_id": OTHER, "user_message": "yo", "reply": "hey",
         "adapter_version": "v1", "user_hash": "u1", "created_at": now},
        {"id": "c", "guild_id": None, "source": "console", "user_message": "hm",
         "reply": "ok", "adapter_version": "base", "user_hash": "u2", "created_at": now},
    ]
    await r.set(k("schema"), 1)
    for exchange in exchanges:
        await r.set(k("ex", exchange["id"]), json.dumps(exchange))
        await r.zadd(k("ex", "all"), {exchange["id"]: now})
    await r.expire(k("ex", "c"), 3600)  # unrated: it expires
    await r.sadd(k("ex", "user", "u1"), "a", "b")
    await r.sadd(k("ex", "user", "u2"), "c")
    await r.hset(k("rt", "a"), "mod", "1")
    await r.hset(k("co", "b"), "mod", json.dumps({"exchange_id": "b", "moderator_hash": "mod",
                                                  "text": "hi there", "created_at": now}))
    await r.zadd(k("rated"), {"a": now, "b": now})
    await r.xadd(k("ev", "ratings"), {"exchange": "a", "kind": "up", "moderator": "mod"})
    await r.set(k("ad", "seq"), 1)
    await r.set(k("ad", "v1", "blob"), blob)
    await r.set(k("ad", "v1", "meta"), json.dumps({
        "version": "v1", "base_model": base_model, "sha256": hashlib.sha256(blob).hexdigest(),
        "size_bytes": len(blob), "created_at": now}))
    await r.zadd(k("ad", "all"), {"v1": now})
    await r.set(k("ad", "active"), "v1")
    await r.rpush(k("ad", "history"), "base")
    await r.lpush(k("tr", "runs"), json.dumps({"outcome": "promoted", "version": "v1"}))


@pytest.fixture
async def old_redis(redis_server, key_prefix, blobs, tiny_model_dir):
    client = aioredis.from_url(redis_server.url)
    await write_schema_1(client, key_prefix, blobs["v1"], str(tiny_model_dir))
    yield client
    await client.aclose()


async def test_schema_1_moves_to_the_home_server_and_keeps_serving_it(old_redis, key_prefix,
                                                                      fast):
    store = Store(old_redis, prefix=key_prefix, user_secret="s", home_tenant=HOME)
    await store.ping()

    assert int(await old_redis.get(f"{key_prefix}:schema")) == 2
    home = store.tenant(HOME)
    assert await home.registry.active() == "v1" and await home.registry.history() == ["base"]
    assert (await store.registry.record("v1")).tenant == HOME
    assert (await home.trainer.recent_runs())[0]["version"] == "v1"
    assert (await home.trainer.snapshot()).new_ratings == 1  # the stream moved with it
    # Each exchange joins its own server's data; the console one (no guild) the home server.
    assert [r.exchange.id for r in await home.exchanges.rated()] == ["a"]
    assert [r.exchange.id for r in await store.tenant(OTHER).exchanges.rated()] == ["b"]
    assert (await store.exchanges.get("c")).tenant == HOME
    assert (await home.exchanges.stats())["per_version"]["v1"] == {
        "exchanges": 1, "rated": 1, "positive": 1, "positive_share": 1.0}
    assert (await store.tenant(OTHER).exchanges.stats())["total"]["corrections"] == 1
    assert await store.tenants() == [HOME, OTHER]
    # User indexes became expiring sorted sets that /forget me still finds.
    assert await old_redis.type(f"{key_prefix}:ex:user:u1") == b"zset"
    assert not await old_redis.exists(f"{key_prefix}:ex:all", f"{key_prefix}:rated")

    # The old adapter serves the home server and, as the default, the other server too.
    engine = Engine.from_settings(fast, store.registry.blob)
    try:
        serving = AdapterRouter(store, engine, home_tenant=HOME)
        await serving.start_up()
        assert serving.version_for(HOME) == "v1" == serving.version_for(OTHER)
    finally:
        await engine.close()

    await store.ping()  # a second start finds schema 2 and moves nothing again
    assert await home.registry.active() == "v1"


async def test_without_a_home_server_the_migration_refuses_and_says_why(old_redis, key_prefix):
    store = Store(old_redis, prefix=key_prefix, user_secret="s")
    with pytest.raises(StoreError, match="set HOME_GUILD_ID"):
        await store.ping()
    assert int(await old_redis.get(f"{key_prefix}:schema")) == 1  # nothing moved
    assert await old_redis.get(f"{key_prefix}:ad:active") == b"v1"
