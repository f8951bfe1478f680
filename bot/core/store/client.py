"""The one way a process connects to Redis: a plain URL or Sentinel, through a bounded pool,
with writes optionally acknowledged by replicas before they count as done.

REDIS_URL is a plain Redis URL or a redis+sentinel:// one (bot/core/redis_url.py). The client
asks the sentinels for the master before each new connection and follows a failover; a
command that fails while the master is down raises redis's ConnectionError (the callers'
"store unavailable").

Replication in Redis is asynchronous: a write the master answered may be lost when the master
dies before a replica has it. With REDIS_WAIT_REPLICAS = N > 0 every command that may write is
followed by a fence write and WAIT N REDIS_WAIT_TIMEOUT_MS on one connection (the replication
stream is ordered: a replica that has the fence has the command too), and a write fewer than N
replicas confirmed raises NotReplicated: what the store reports as done is then on N
replicas, which Sentinel promotes from. An unconfirmed write may still be on the master and
survive; it is not reported as done.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError

from bot.core.redis_url import is_sentinel_url, parse_sentinel_url

WAIT_MARGIN_S = 5.0  # a WAIT's reply may take its timeout plus this before the socket gives up

# Commands the store sends that never write: no WAIT after them. Any other command is followed
# by one (an unknown read costs a round trip; an unknown write skipped could be lost).
READ_COMMANDS = frozenset({
    "GET", "MGET", "GETRANGE", "STRLEN", "EXISTS", "TTL", "PTTL", "TYPE", "SCAN", "KEYS",
    "HGET", "HMGET", "HGETALL", "HKEYS", "HVALS", "HLEN", "HEXISTS", "HSCAN",
    "SMEMBERS", "SISMEMBER", "SMISMEMBER", "SCARD", "SSCAN",
    "ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZSCORE", "ZMSCORE", "ZCARD",
    "ZCOUNT", "ZRANK", "ZREVRANK", "ZSCAN", "LRANGE", "LLEN", "LINDEX",
    "XRANGE", "XREVRANGE", "XLEN", "XINFO", "XREAD",
    "PING", "ECHO", "INFO", "CONFIG GET", "TIME", "DBSIZE", "WAIT", "ROLE", "CLIENT SETNAME",
    "CLIENT SETINFO", "SCRIPT EXISTS", "SCRIPT LOAD", "EVALSHA_RO", "EVAL_RO", "AUTH", "SELECT",
    "HELLO", "PUBLISH",
})


class NotReplicated(RedisError):
    """A write reached the master but fewer replicas than REDIS_WAIT_REPLICAS confirmed it in
    time: it is not reported as done (it may or may not survive a failover)."""


@dataclass(frozen=True)
class Acknowledgement:
    """Writes count as done once `replicas` replicas confirm them within `timeout_ms`."""

    replicas: int
    timeout_ms: int
    fence_key: str  # what the fence write sets


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's master lookup with the blocking pool's wait for a free connection; closing it
    also closes the connections to the sentinels."""

    async def aclose(self) -> None:
        await super().aclose()
        await self.sentinel_manager.aclose()


class AcknowledgedPipeline(Pipeline):
    """A pipeline whose writes count once the replicas confirm them (see the module doc)."""

    acknowledgement: Acknowledgement

    async def execute(self, raise_on_error: bool = True):
        writes = any(_writes(command) for command, _ in self.command_stack)
        result = await super().execute(raise_on_error)
        if writes:
            await _confirm(self.connection_pool, self.response_callbacks, self.acknowledgement)
        return result


class StoreRedis(aioredis.Redis):
    """redis-py's client; with an `acknowledgement`, each write waits for the replicas."""

    acknowledgement: Acknowledgement | None = None

    async def execute_command(self, *args, **options):
        result = await super().execute_command(*args, **options)
        if self.acknowledgement is not None and _writes(args):
            await _confirm(self.connection_pool, self.response_callbacks, self.acknowledgement)
        return result

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None):
        if self.acknowledgement is None:
            return super().pipeline(transaction, shard_hint)
        pipe = AcknowledgedPipeline(self.connection_pool, self.response_callbacks, transaction,
                                    shard_hint)
        pipe.acknowledgement = self.acknowledgement
        return pipe


def _writes(command: tuple) -> bool:
    name = command[0].decode() if isinstance(command[0], bytes) else str(command[0])
    return name.upper() not in READ_COMMANDS


async def _confirm(pool, callbacks, ack: Acknowledgement) -> None:
    """Write the fence and WAIT on one connection: the replication stream is ordered, so a
    replica that has the fence has every write the master answered before it."""
    pipe = Pipeline(pool, callbacks, False, None)
    async with pipe:
        pipe.set(ack.fence_key, b"1")
        pipe.execute_command("WAIT", ack.replicas, ack.timeout_ms)
        _, confirmed = await pipe.execute()
    if confirmed < ack.replicas:
        raise NotReplicated(f"a write reached {confirmed} of {ack.replicas} replica(s) within "
                            f"{ack.timeout_ms} ms (REDIS_WAIT_REPLICAS)")


def connect(url: str, *, max_connections: int, pool_timeout_s: float,
            acknowledgement: Acknowledgement | None = None, **options) -> StoreRedis:
    """A client on `url` whose pool holds at most `max_connections` and makes a command wait up
    to `pool_timeout_s` for a free one (then redis ConnectionError). `options` are redis-py
    connection arguments (socket_timeout=, ...); the URL's own arguments win over them. With an
    `acknowledgement` the socket timeout is raised to outlast its WAIT."""
    if acknowledgement is not None:
        wait_s = acknowledgement.timeout_ms / 1000 + WAIT_MARGIN_S
        options["socket_timeout"] = max(options.get("socket_timeout") or 0, wait_s)
    if is_sentinel_url(url):
        target = parse_sentinel_url(url)
        connection = {**options, **target.connection}
        sentinel_options = {k: v for k, v in connection.items() if k.startswith("socket_")}
        if target.sentinel_password is not None:
            sentinel_options["password"] = target.sentinel_password
        sentinel = Sentinel(target.sentinels, sentinel_kwargs=sentinel_options)
        client = sentinel.master_for(
            target.service, redis_class=StoreRedis, connection_pool_class=BlockingSentinelPool,
            max_connections=max_connections, timeout=pool_timeout_s, **connection)
    else:
        pool = BlockingConnectionPool.from_url(url, max_connections=max_connections,
                                               timeout=pool_timeout_s, **options)
        client = StoreRedis.from_pool(pool)  # closing the client closes its pool
    client.acknowledgement = acknowledgement
    return client
