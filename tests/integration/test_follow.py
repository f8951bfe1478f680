"""Each server's adapter is followed from the registry in a real Redis: start-up, activate,
rollback, the default adapter, refusals, fallbacks, reconnects."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from store_util import raw_redis
from waiting import eventually

from bot.core.dialogue import Turn
from bot.core.local_redis import LocalRedis
from bot.core.store import AdapterRecord, Store
from bot.engine.engine import Engine
from bot.service.follow import AdapterRouter

HELLO = [Turn("user", "hello, how are you?")]
ONE, TWO = 101, 202  # two servers


def greedy_engine(settings, store) -> Engine:
    """Greedy six-token replies; adapters from `store`'s registry."""
    return Engine.from_settings(settings.model_copy(update={"temperature": 0.0,
                                                             "max_new_tokens": 6}),
                                store.registry.blob)


@pytest.fixture
async def engine(settings, store):
    engine = greedy_engine(settings, store)
    await engine.start()
    yield engine
    await engine.close()


async def publish(store, settings, blob: bytes, tenant: int = ONE) -> str:
    record = await store.tenant(tenant).registry.save(
        AdapterRecord(base_model=settings.model_name), blob)
    return record.version


@pytest.fixture
async def follower(store, engine):
    changes: list = []
    serving = AdapterRouter(store, engine, home_tenant=ONE)

    async def on_change(event, record):
        if event.kind != "refused":  # changes served only (refusals: test_sane_adapters.py)
            changes.append((event.tenant, event.kind, event.version,
                            record.version if record else None))

    async def start():
        """Start following and wait until it served every server once."""
        task = asyncio.create_task(serving.follow(on_change))
        tasks.append(task)
        await asyncio.wait_for(serving.ready.wait(), 20)
        return task

    tasks: list[asyncio.Task] = []
    yield serving, start, changes
    for task in tasks:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_start_up_serves_each_servers_version_and_the_default(store, engine, settings,
                                                                  blobs, follower):
    serving, start, changes = follower
    await store.tenant(ONE).registry.activate(await publish(store, settings, blobs["v1"]))
    v2 = await publish(store, settings, blobs["v2"], tenant=TWO)
    await store.tenant(TWO).registry.activate(v2)
    await start()
    assert (serving.version_for(ONE), serving.version_for(TWO)) == ("v1", v2)
    # A server without an adapter of its own gets the default (the home server's) adapter;
    # no server at all (a DM without HOME_GUILD_ID): the base model.
    assert serving.version_for(999) == "v1" and serving.version_for(None) == "base"
    assert sorted(engine.loaded_versions) == sorted(["v1", v2])
    assert changes == []  # start-up is not an event


async def test_follows_activate_and_rollback_per_server(store, engine, settings, blobs,
                                                        follower):
    serving, start, changes = follower
    v1 = await publish(store, settings, blobs["v1"])
    v2 = await publish(store, settings, blobs["v2"])
    other = await publish(store, settings, blobs["v2"], tenant=TWO)
    await start()
    one = store.tenant(ONE).registry
    await one.activate(v1)
    await eventually(lambda: serving.version_for(ONE) == v1)
    await one.activate(v2)
    await eventually(lambda: serving.version_for(ONE) == v2)
    await store.tenant(TWO).registry.activate(other)
    await eventually(lambda: serving.version_for(TWO) == other)
    await one.rollback()
    await eventually(lambda: serving.version_for(ONE) == v1)
    assert serving.version_for(TWO) == other  # server two is left alone
    await one.activate("base")
    await eventually(lambda: serving.own_version(ONE) == "base")
    await eventually(lambda: len(changes) == 5)
    assert changes == [(ONE, "activated", v1, v1), (ONE, "activated", v2, v2),
                       (TWO, "activated", other, other), (ONE, "rollback", v1, v1),
                       (ONE, "activated", "base", None)]


async def test_a_version_name_reused_after_redis_lost_its_data_serves_the_new_weights(
        store, engine, settings, blobs, follower):
    serving, start, changes = follower
    v1 = await publish(store, settings, blobs["v1"])
    v2 = await publish(store, settings, blobs["v2"])
    await start()
    for version in (v2, v1):  # v1 is active, and both are loaded
        await store.tenant(ONE).registry.activate(version)
        await eventually(lambda version=version: serving.version_for(ONE) == version)
    answers = {v: (await engine.generate(HELLO, adapter=v)).text for v in (v1, v2)}
    assert answers[v1] != answers[v2]

    await store.delete_all_keys()  # Redis lost everything (no AOF, or an older backup)
    await store.ping()
    reused = await publish(store, settings, blobs["v2"])  # the counter starts again
    assert reused == v1
    await store.tenant(ONE).registry.activate(reused)
    async with asyncio.timeout(20):  # the follower hears it and loads the new bytes
        while (await engine.generate(HELLO, adapter=reused)).text != answers[v2]:
            await asyncio.sleep(0.05)


async def test_the_operator_can_make_another_servers_adapter_the_default(store, settings,
                                                                         blobs, follower):
    serving, start, _ = follower
    v1 = await publish(store, settings, blobs["v1"])
    await store.tenant(ONE).registry.activate(v1)
    v2 = await publish(store, settings, blobs["v2"], tenant=TWO)
    await store.tenant(TWO).registry.activate(v2)
    await start()
    assert serving.version_for(999) == v1
    await store.registry.set_default_tenant(TWO)
    await eventually(lambda: serving.version_for(999) == v2)
    assert serving.version_for(ONE) == v1  # a server with its own adapter keeps it


async def test_unservable_versions_are_skipped(store, engine, settings, blobs, follower,
                                              caplog):
    serving, start, changes = follower
    good = await publish(store, settings, blobs["v1"])
    damaged = await publish(store, settings, blobs["v2"])
    await raw_redis(store).set(store.keys("ad", damaged, "blob"), blobs["v2"][:-10] + b"0123456789")
    foreign = await publish(store, settings, blobs["other_forged"])
    fine_later = await publish(store, settings, blobs["v2"])
    await start()
    registry = store.tenant(ONE).registry
    await registry.activate(good)
    await eventually(lambda: serving.version_for(ONE) == good)
    for bad, why in ((damaged, "sha256"), (foreign, "do not fit")):  # corrupt, other model
        await registry.activate(bad)
        await eventually(lambda bad=bad, why=why: any(
            f"adapter {bad} cannot be served" in r.message and why in r.message
            for r in caplog.records))
        assert serving.version_for(ONE) == good
        assert (await engine.generate(HELLO, adapter=serving.version_for(ONE))
                ).adapter_version == good
    await registry.activate(fine_later)  # the follower survived both
    await eventually(lambda: serving.version_for(ONE) == fine_later)
    await eventually(lambda: len(changes) == 2)
    assert [version for _, _, version, _ in changes] == [good, fine_later]


async def test_a_damaged_active_adapter_at_start_up_serves_the_newest_readable_one(
        store, settings, blobs, follower, caplog):
    serving, start, _ = follower
    registry = store.tenant(ONE).registry
    older = await publish(store, settings, blobs["v1"])
    newer = await publish(store, settings, blobs["v2"])
    await registry.activate(older)
    await registry.activate(newer)
    await raw_redis(store).set(store.keys("ad", newer, "blob"), b"damaged while the bot was down")
    await start()
    assert serving.version_for(ONE) == older
    assert f"server {ONE} is served by {older} instead of its active adapter {newer}" \
        in caplog.text


async def test_refresh_once(store, engine, settings, blobs):
    serving = AdapterRouter(store, engine)
    assert await serving.refresh(ONE) == "base"
    v1 = await publish(store, settings, blobs["v1"])
    await store.tenant(ONE).registry.activate(v1)
    assert await serving.refresh(ONE) == v1
    assert "v1" in engine.loaded_versions
    assert (await engine.generate(HELLO, adapter=serving.version_for(ONE))
            ).adapter_version == v1


async def test_a_slow_start_up_does_not_undo_a_newer_refresh(store, engine, settings, blobs,
                                                             monkeypatch):
    """Start-up reads v1 and loads it slowly; meanwhile an admin's command makes v2 active and
    refreshes: the router must end serving v2, not the older read that finished last."""
    v1 = await publish(store, settings, blobs["v1"])
    v2 = await publish(store, settings, blobs["v2"])
    await store.tenant(ONE).registry.activate(v1)
    loading_v1, release_v1 = asyncio.Event(), asyncio.Event()
    load = engine.load

    async def slow_v1(version, **options):
        if version == v1:
            loading_v1.set()
            await release_v1.wait()
        await load(version, **options)

    monkeypatch.setattr(engine, "load", slow_v1)
    serving = AdapterRouter(store, engine, home_tenant=ONE)
    starting = asyncio.create_task(serving.start_up())
    await asyncio.wait_for(loading_v1.wait(), 10)
    await store.tenant(ONE).registry.activate(v2)
    refreshing = asyncio.create_task(serving.refresh(ONE))
    await asyncio.wait({refreshing}, timeout=2)  # unserialized, it finishes here
    release_v1.set()
    assert await asyncio.wait_for(refreshing, 20) == v2
    await asyncio.wait_for(starting, 20)
    assert serving.version_for(ONE) == v2


async def test_follower_resubscribes_after_redis_restarts(tmp_path, settings, blobs):
    server = LocalRedis(tmp_path, appendonly=True).start()
    store = Store(aioredis.from_url(server.url), prefix="restart", user_secret="s")
    engine = greedy_engine(settings, store)
    serving = AdapterRouter(store, engine)
    task = None
    try:
        v1 = await publish(store, settings, blobs["v1"])
        v2 = await publish(store, settings, blobs["v2"])
        await store.tenant(ONE).registry.activate(v1)
        task = asyncio.create_task(serving.follow())
        await eventually(lambda: serving.version_for(ONE) == v1)
        server.stop()  # a clean shutdown: the AOF keeps the registry
        await asyncio.sleep(0.3)
        server.start()
        for _ in range(100):  # the store's own client reconnects on its next command
            try:
                # made while the follower is still reconnecting
                await store.tenant(ONE).registry.activate(v2)
                break
            except (RedisConnectionError, OSError):
                await asyncio.sleep(0.05)
        # It missed the event, but it reads the active version again once it is back.
        await eventually(lambda: serving.version_for(ONE) == v2, timeout=20)
        assert not task.done()
    finally:
        if task is not None:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await engine.close()
        await store.close()
        server.close()
