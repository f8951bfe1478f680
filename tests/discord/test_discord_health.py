"""The bot's heartbeat and `deploy/healthcheck.py --discord`: healthy only while the bot on this
host beats and its gateway connection is up."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import discord.ext.test as dpytest
from paths import REPO
from subprocess_env import settings_env

from bot.frontends.discord.app import build_bot
from bot.frontends.discord.cogs.health import HEARTBEAT_TTL_S, heartbeat_of

sys.path.insert(0, str(REPO / "deploy"))
from healthcheck import discord_problem  # noqa: E402
from store_util import raw_redis


def healthcheck(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**settings_env(settings), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "deploy" / "healthcheck.py"), *args],
                          env=env, capture_output=True, text=True, timeout=60)


def beat(**changes) -> dict:
    return {"at": time.time(), "host": socket.gethostname(), "ready": True,
            "latency_ms": 42.0, "shard_count": 2, "shards_ready": 2, **changes}


async def test_the_bot_beats_once_ready(bot, store):
    host = socket.gethostname()
    assert await store.heartbeat(host) is None
    bot.dispatch("ready")
    try:
        async with asyncio.timeout(10):
            while await store.heartbeat(host) is None:
                await asyncio.sleep(0.02)
    finally:
        bot.get_cog("Health").beat.cancel()
    written = await store.heartbeat(host)
    assert written["host"] == host and written["shard_count"] == 1
    assert written["guilds"] == len(bot.guilds)
    expiry_ms = await raw_redis(store).pttl(store.keys("hb", "discord", host))
    assert 0 < expiry_ms <= HEARTBEAT_TTL_S * 1000


async def test_a_reconnecting_bot_beats_unready_at_once(bot, store):
    host = socket.gethostname()
    bot._ready.set()  # what discord.py does on READY (dpytest never connects a gateway)
    bot.dispatch("ready")
    try:
        async with asyncio.timeout(10):
            while await store.heartbeat(host) is None:
                await asyncio.sleep(0.02)
        assert (await store.heartbeat(host))["ready"] is True
        bot.dispatch("disconnect")  # the gateway dropped; discord.py reconnects
        await dpytest.run_all_events()
        written = await store.heartbeat(host)
        assert (written["ready"], written["shards_ready"]) == (False, 0)
        assert "0/1 shards ready" in discord_problem(written, time.time())
        bot.dispatch("resumed")
        await dpytest.run_all_events()
        assert (await store.heartbeat(host))["ready"] is True
    finally:
        bot.get_cog("Health").beat.cancel()
        bot._ready.clear()


async def test_a_sharded_bot_not_yet_connected_beats_unready(fast, runtime):
    sharded = build_bot(fast.model_copy(update={"shard_count": 2}), runtime)

    written = heartbeat_of(sharded)

    assert (written["ready"], written["shard_count"], written["shards_ready"]) == (False, 2, 0)
    assert written["latency_ms"] is None  # discord.py says nan: JSON gets null
    assert "0/2 shards ready" in discord_problem(written, time.time())


async def test_the_healthcheck_reads_the_bots_connection(fast, store):
    host = socket.gethostname()
    assert discord_problem(beat(), time.time()) is None
    assert "0/2 shards ready" in discord_problem(beat(shards_ready=0, ready=False), time.time())
    assert "1/2 shards ready" in discord_problem(beat(shards_ready=1), time.time())
    assert "200 s old" in discord_problem(beat(at=time.time() - 200), time.time())
    assert discord_problem(beat(latency_ms=None), time.time()) == (
        "no gateway latency measured yet")

    missing = await asyncio.to_thread(healthcheck, fast, "--discord")
    assert missing.returncode == 1
    assert missing.stdout.startswith("unhealthy: Discord: no heartbeat from the bot")
    trainer = await asyncio.to_thread(healthcheck, fast)  # the trainer's check needs none
    assert trainer.returncode == 0, trainer.stdout + trainer.stderr

    await store.write_heartbeat(host, beat(), ttl_s=60)
    healthy = await asyncio.to_thread(healthcheck, fast, "--discord")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.startswith("healthy: settings valid, store answers, Discord "
                                     "connected (gateway latency 42 ms, 2/2 shards ready")
