"""The bot follows the adapter registry in a real Redis: start-up, activate, rollback, refusals."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.dialogue import Turn
from bot.engine import Engine
from bot.follow import follow_registry, sync_active
from bot.local_redis import LocalRedis
from bot.store import AdapterRecord, Store

HELLO = [Turn("user", "hello, how are you?")]


@pytest.fixture
async def engine(settings):
    engine = Engine.from_settings(settings.model_copy(update={"temperature": 0.0,
                                                               "max_new_tokens": 6}))
    await engine.start()
    yield engine
    await engine.close()


async def publish(store, settings, blob: bytes) -> str:
    record = await store.registry.save(AdapterRecord(base_model=settings.model_name), blob)
    return record.version


async def eventually(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def follower(store, engine):
    changes: list = []

    async def on_change(event, record):
        changes.append((event.kind, event.version, record.version if record else None))

    async def start():
        """Start following and wait until the follower listens for events."""
        task = asyncio.create_task(follow_registry(store, engine, on_change))
        tasks.append(task)
        channel = store.k("ev", "adapter")
        for _ in range(500):
            [(_, listeners)] = await store.r.pubsub_numsub(channel)
            if listeners:
                return task
            await asyncio.sleep(0.01)
        raise AssertionError("the follower never subscribed")

    tasks: list[asyncio.Task] = []
    yield start, changes
    for task in tasks:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_start_up_serves_the_active_version(store, engine, settings, blobs, follower):
    start, changes = follower
    v1 = await publish(store, settings, blobs["v1"])
    await store.registry.activate(v1)
    await start()
    await eventually(lambda: engine.active_version == v1)
    assert (await engine.generate(HELLO)).adapter_version == v1
    assert changes == []  # start-up is not an event


async def test_follows_activate_and_rollback(store, engine, settings, blobs, follower):
    start, changes = follower
    v1 = await publish(store, settings, blobs["v1"])
    v2 = await publish(store, settings, blobs["v2"])
    await start()
    await store.registry.activate(v1)
    await eventually(lambda: engine.active_version == v1)
    reply_v1 = (await engine.generate(HELLO)).text
    await store.registry.activate(v2)
    await eventually(lambda: engine.active_version == v2)
    result = await engine.generate(HELLO)
    assert result.adapter_version == v2 and result.text != reply_v1
    await store.registry.rollback()
    await eventually(lambda: engine.active_version == v1)
    assert (await engine.generate(HELLO)).text == reply_v1
    await store.registry.activate("base")
    await eventually(lambda: engine.active_version == "base")
    await eventually(lambda: len(changes) == 4)
    assert changes == [("activated", v1, v1), ("activated", v2, v2), ("rollback", v1, v1),
                       ("activated", "base", None)]


async def test_unservable_versions_are_skipped(store, engine, settings, blobs, follower,
                                              caplog):
    start, changes = follower
    good = await publish(store, settings, blobs["v1"])
    damaged = await publish(store, settings, blobs["v2"])
    await store.r.set(store.k("ad", damaged, "blob"), blobs["v2"][:-10] + b"0123456789")
    foreign = await publish(store, settings, blobs["other_forged"])
    fine_later = await publish(store, settings, blobs["v2"])
    await start()
    await store.registry.activate(good)
    await eventually(lambda: engine.active_version == good)
    for bad, why in ((damaged, "sha256"), (foreign, "do not fit")):  # corrupt, other model
        await store.registry.activate(bad)
        await eventually(lambda bad=bad, why=why: any(
            f"adapter {bad} cannot be served" in r.message and why in r.message
            for r in caplog.records))
        assert engine.active_version == good
        assert (await engine.generate(HELLO)).adapter_version == good
    await store.registry.activate(fine_later)  # the follower survived both
    await eventually(lambda: engine.active_version == fine_later)
    await eventually(lambda: len(changes) == 2)
    assert [version for _, version, _ in changes] == [good, fine_later]


async def test_sync_active_once(store, engine, settings, blobs):
    assert await sync_active(store, engine) == "base"
    v1 = await publish(store, settings, blobs["v1"])
    await store.registry.activate(v1)
    assert await sync_active(store, engine) == v1
    assert engine.active_version == v1
    assert (await engine.generate(HELLO)).adapter_version == v1


async def test_follower_resubscribes_after_redis_restarts(tmp_path, engine, settings, blobs):
    server = LocalRedis(tmp_path, appendonly=True).start()
    store = Store(aioredis.from_url(server.url), prefix="restart", user_secret="s")
    task = None
    try:
        v1 = await publish(store, settings, blobs["v1"])
        v2 = await publish(store, settings, blobs["v2"])
        await store.registry.activate(v1)
        task = asyncio.create_task(follow_registry(store, engine))
        await eventually(lambda: engine.active_version == v1)
        server.stop()  # a clean shutdown: the AOF keeps the registry
        await asyncio.sleep(0.3)
        server.start()
        for _ in range(100):  # the store's own client reconnects on its next command
            try:
                await store.registry.activate(v2)  # made while the follower is still reconnecting
                break
            except (RedisConnectionError, OSError):
                await asyncio.sleep(0.05)
        # It missed the event, but it reads the active version again once it is back.
        await eventually(lambda: engine.active_version == v2, timeout=20)
        assert not task.done()
    finally:
        if task is not None:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await store.close()
        server.close()
