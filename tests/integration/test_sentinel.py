"""The store behind Redis Sentinel: real master, replica and sentinel processes, a real
failover, and what REDIS_WAIT_REPLICAS promises about acknowledged writes."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sentinel_util import SentinelSet, wait_for
from store_util import TENANT, raw_redis

from bot.core.config import load_settings
from bot.core.store import Exchange, Store
from bot.core.store.client import NotReplicated, connect

WRITES = 12  # exchanges stored (and each rated) before the master dies
FAILOVER_TIMEOUT_S = 60.0  # a hang, not slowness (a sentinel whose clock jumps waits 30 s)


@pytest.fixture
def sentinel_set(tmp_path):
    servers = SentinelSet(tmp_path).start()
    yield servers
    servers.close()


def store_settings(url: str, key_prefix: str, **more):
    return load_settings(redis_url=url, key_prefix=key_prefix, user_hash_secret="test-secret",
                         home_guild_id=TENANT, _env_file=None, **more)


def exchange(n: int) -> Exchange:
    return Exchange(tenant=TENANT, guild_id=TENANT, channel_id=2, message_id=1000 + n,
                    user_message=f"question {n}", reply=f"answer {n}")


async def until_answers(read, timeout_s: float):
    """`read()` once the store reaches a master again (polled; generous deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await read()
        except (RedisConnectionError, RedisTimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_store_follows_a_failover_and_keeps_every_acknowledged_write(sentinel_set,
                                                                           key_prefix):
    settings = store_settings(sentinel_set.url, key_prefix, redis_wait_replicas=1,
                              redis_wait_timeout_ms=20_000)
    store = Store.from_settings(settings)
    try:
        await store.ping()
        own = store.tenant(TENANT)
        acknowledged = []
        for n in range(WRITES):
            stored = await own.exchanges.add(exchange(n), user_id=n)
            await own.exchanges.rate(stored.id, 500 + n, 1 if n % 2 else -1)
            acknowledged.append(stored.id)

        sentinel_set.master.kill()
        try:
            await asyncio.to_thread(
                wait_for, lambda: sentinel_set.sentinel.master_port() == sentinel_set.replica.port,
                "the sentinel promotes the replica", FAILOVER_TIMEOUT_S)
            first = await until_answers(lambda: own.exchanges.get(acknowledged[0]),
                                        FAILOVER_TIMEOUT_S)
        except (AssertionError, RedisError) as error:
            raise AssertionError(f"{error}\n{sentinel_set.logs()}") from error
        assert first.reply == "answer 0"
        for n, exchange_id in enumerate(acknowledged):
            assert (await own.exchanges.get(exchange_id)).user_message == f"question {n}"
            assert list((await own.exchanges.ratings(exchange_id)).values()) == [
                1 if n % 2 else -1]
        connection = raw_redis(store).connection_pool
        assert connection.master_address[1] == sentinel_set.replica.port

    finally:
        await store.close()

    # The new master has no replica left: a write reaches it but is not reported done.
    impatient = Store.from_settings(settings.model_copy(update={"redis_wait_timeout_ms": 300}))
    try:
        late = exchange(99)
        with pytest.raises(NotReplicated):
            await impatient.tenant(TENANT).exchanges.add(late, user_id=99)
        assert await raw_redis(impatient).exists(impatient.keys.exchange(late.id)) == 1
    finally:
        await impatient.close()


async def test_writes_the_replica_did_not_confirm_raise_and_reads_do_not(tmp_path, key_prefix):
    servers = SentinelSet(tmp_path).start()
    try:
        settings = store_settings(servers.master.url, key_prefix, redis_wait_replicas=1,
                                  redis_wait_timeout_ms=1500)
        store = Store.from_settings(settings)
        try:
            await store.ping()
            stored = await store.tenant(TENANT).exchanges.add(exchange(1), user_id=1)
            servers.replica.kill()  # from now on no replica confirms anything
            with pytest.raises(NotReplicated, match="0 of 1 replica"):
                await store.tenant(TENANT).exchanges.rate(stored.id, 7, 1)
            # a transaction is confirmed too
            async with raw_redis(store).pipeline(transaction=True) as pipe:
                pipe.set(store.keys("probe"), b"1")
                with pytest.raises(NotReplicated):
                    await pipe.execute()
            # reads wait for nothing; what was not confirmed reached the master all the same
            assert len(await store.tenant(TENANT).exchanges.ratings(stored.id)) == 1
            assert await raw_redis(store).get(store.keys("probe")) == b"1"
        finally:
            await store.close()
    finally:
        servers.close()


async def test_sentinel_pool_waits_for_a_free_connection(sentinel_set):
    client = connect(sentinel_set.url, max_connections=2, pool_timeout_s=0.5)
    pool = client.connection_pool
    try:
        held = [await pool.get_connection() for _ in range(2)]
        started = time.monotonic()
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await pool.get_connection()
        assert time.monotonic() - started >= 0.45
        await pool.release(held.pop())
        assert await client.ping()  # a released connection serves the next command
        await pool.release(held.pop())
    finally:
        await client.aclose()


async def test_the_demo_finds_a_store_behind_sentinel(sentinel_set):
    from trainer.demo.prepare import redis_answers

    assert await redis_answers(sentinel_set.url)
    assert not await redis_answers(sentinel_set.url.replace("/lbot/", "/nosuch/"))
    assert not await redis_answers("redis+sentinel://127.0.0.1:1/")  # malformed: no service


async def test_an_unknown_service_is_a_store_error_without_the_password(sentinel_set):
    url = sentinel_set.url.replace("redis+sentinel://", "redis+sentinel://:hunter22@").replace(
        "/lbot/", "/nosuch/")
    client = connect(url, max_connections=2, pool_timeout_s=1)
    try:
        with pytest.raises(RedisError) as raised:
            await client.ping()
        assert "nosuch" in str(raised.value) and "hunter22" not in str(raised.value)
    finally:
        await client.aclose()
