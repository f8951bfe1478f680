"""Under load: the bounded Redis pool waits instead of refusing, a store that cannot be reached
is answered (never raised) and the engine summarises a burst of refusals in one log line."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis
from store_util import TENANT, raw_redis
from stream_util import RecordingSink

from bot.core.dialogue import Turn
from bot.core.store import Exchange, Store
from bot.engine import engine as engine_module
from bot.engine.engine import Engine
from bot.runtime import Runtime
from bot.service import retry
from bot.service.actions import RATING_UNAVAILABLE
from bot.service.drafts import BUSY_REPLY, STORE_REPLY, Failure


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(retry, "RETRY_DELAYS_S", (0.01, 0.01))


async def test_many_concurrent_ratings_all_land_through_the_settings_store(fast, engine):
    """redis-py's default pool raised MaxConnectionsError past 100 commands in flight: 400 of
    500 concurrent ratings were lost. The store's pool is bounded and makes them wait."""
    store = Store.from_settings(fast)
    try:
        pool = raw_redis(store).connection_pool
        assert isinstance(pool, aioredis.BlockingConnectionPool)
        assert pool.max_connections == fast.redis_max_connections
        exchanges = [await store.exchanges.add(Exchange(tenant=TENANT, user_message=f"q{n}",
                                                        reply="a"))
                     for n in range(50)]
        moderators = range(10)
        async with Runtime(fast, store=store, generator=engine) as runtime:
            answers = await asyncio.gather(*(
                runtime.actions.rate(TENANT, exchange.id, moderator, 1 if moderator % 2 else -1)
                for exchange in exchanges for moderator in moderators),
                return_exceptions=True)
        assert len(answers) == 500
        failed = [a for a in answers if isinstance(a, BaseException) or not a.ok]
        assert failed == []
        for exchange in exchanges:
            assert len(await store.exchanges.ratings(exchange.id)) == len(moderators)
    finally:
        await store.close()


async def test_no_free_connection_is_answered_not_raised(fast, engine, quick_retries):
    """With every pooled connection held, a rating waits REDIS_POOL_TIMEOUT_SECONDS, is tried
    again, then answered "not stored" (the front end reports it); a chat apologises."""
    # Three connections: the runtime's registry subscription holds one, two BLPOPs the rest.
    tight = fast.model_copy(update={"redis_max_connections": 3,
                                    "redis_pool_timeout_seconds": 0.1})
    store = Store.from_settings(tight)
    blocker = f"{tight.key_prefix}:blocker"
    try:
        exchange = await store.exchanges.add(Exchange(tenant=TENANT, user_message="q", reply="a"))
        async with Runtime(tight, store=store, generator=engine) as runtime:
            redis = raw_redis(store)
            holders = [asyncio.create_task(redis.blpop([blocker], timeout=0)) for _ in range(2)]
            await asyncio.sleep(0.2)  # both connections now wait inside BLPOP
            actions = runtime.actions

            answer = await actions.rate(TENANT, exchange.id, "mod", 1)
            assert (answer.ok, answer.text) == (False, RATING_UNAVAILABLE)
            reported = await actions.rate_reply(TENANT, 12345, "mod", 1)
            assert (reported.ok, reported.text) == (False, RATING_UNAVAILABLE)
            status = await actions.stats(TENANT)
            assert not status.ok and "unavailable" in status.text
            chat = await runtime.conversation.reply([Turn("user", "hello")], RecordingSink(),
                                                    source="console", user_id="u", guild_id=None,
                                                    channel_id=None)
            assert chat == Failure("unavailable", STORE_REPLY)

            async with aioredis.from_url(tight.redis_url) as other:
                await other.rpush(blocker, "a", "b")  # release both connections
            await asyncio.gather(*holders)
            assert (await actions.rate(TENANT, exchange.id, "mod", 1)).ok
            assert await store.exchanges.ratings(exchange.id) == {store.user_hash("mod"): 1}
    finally:
        await store.close()


async def test_a_burst_of_refusals_is_counted_and_logged_once(fast, store, caplog,
                                                              monkeypatch):
    monkeypatch.setattr(engine_module, "BUSY_QUIET_S", 3.0)  # one burst even on a slow machine
    small = fast.model_copy(update={"queue_max": 2, "batch_max_size": 1})
    engine = Engine.from_settings(small, store.registry.blob)
    await engine.start()
    try:
        async with Runtime(small, store=store, generator=engine) as runtime:
            with caplog.at_level(logging.INFO):
                results = await asyncio.gather(*(
                    runtime.conversation.reply([Turn("user", f"hello {n}")], RecordingSink(),
                                               source="console", user_id=n, guild_id=None,
                                               channel_id=1)
                    for n in range(30)))
            busy = [r for r in results if isinstance(r, Failure)]
            assert busy and all(r == Failure("busy", BUSY_REPLY) for r in busy)
            assert engine.refused == len(busy)
            async with asyncio.timeout(30):
                while not any("turned away" in r.message for r in caplog.records):
                    await asyncio.sleep(0.05)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.message for r in warnings]
        assert warnings[0].name == "bot.engine.engine"
        assert f"turned away {len(busy)} request(s)" in warnings[0].message
    finally:
        await engine.close()
