"""Gateway processes: bots with disjoint SHARD_IDS against a fake Discord gateway
(tests/discord_gateway.py), IDENTIFY slots shared through real Redis, and the gateway's
"sharding required" close."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import pytest
from discord_gateway import FakeGateway
from paths import REPO
from subprocess_env import settings_env

from bot.core.fatal import Fatal
from bot.core.local_redis import free_port
from bot.core.store import Store
from bot.core.store.client import connect
from bot.core.store.keys import gateway_process
from bot.frontends.discord import app
from bot.frontends.discord.app import build_bot
from bot.frontends.discord.identify import IdentifyGate

sys.path.insert(0, str(REPO / "deploy"))
from healthcheck import discord_problem  # noqa: E402

SHARD_COUNT = 4
GUILDS = [k << 22 for k in range(1, 9)]  # guild k is on shard k % 4 (Discord's rule)
TIMEOUT_S = 60.0  # a hang, not slowness


async def until(condition, what: str, tasks=()):
    """Poll `condition` (also failing at once when one of `tasks` ended with an error)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not await condition():
        for task in tasks:
            if task.done() and task.exception():
                raise task.exception()
        assert time.monotonic() < deadline, f"{what} within {TIMEOUT_S:.0f} s"
        await asyncio.sleep(0.05)


def healthcheck_of(settings, **env) -> subprocess.CompletedProcess:
    """`deploy/healthcheck.py --discord` in the environment of one gateway process."""
    return subprocess.run([sys.executable, str(REPO / "deploy" / "healthcheck.py"), "--discord"],
                          env={**settings_env(settings, **env), "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)


async def stop(bot) -> None:
    health = bot.get_cog("Health")  # None until setup_hook loaded the cogs
    if health is not None:
        health.beat.cancel()
    await bot.close()


def gateway_bot(settings, runtime, shard_ids: str | None):
    update = {"shard_count": SHARD_COUNT, "shard_ids": shard_ids} if shard_ids else {}
    bot = build_bot(settings.model_copy(update=update), runtime)
    bot._connection.guild_ready_timeout = 0.1  # discord.py waits this long after the last guild
    if bot.identify_gate is not None:
        bot.identify_gate.window_s = 0.5  # Discord's 5 s would only make the test slow
    return bot


async def test_two_gateway_processes_run_disjoint_shards(fast, fake_runtime, store,
                                                         monkeypatch):
    gateway = await FakeGateway(GUILDS, max_concurrency=2).start()
    gateway.use(monkeypatch)
    bots = [gateway_bot(fast, fake_runtime, ids) for ids in ("0,1", "2,3")]
    tasks = [asyncio.create_task(app.start(bot, "fake-token")) for bot in bots]
    host = socket.gethostname()
    processes = [gateway_process(host, [0, 1]), gateway_process(host, [2, 3])]
    try:
        async def all_ready():
            return all(bot.is_ready() for bot in bots)

        async def both_beat_ready():
            beats = [await store.heartbeat(p) for p in processes]
            return all(b and b["shards_ready"] == 2 for b in beats)

        await until(all_ready, "both gateway processes are ready", tasks)
        await until(both_beat_ready, "both processes' heartbeats say ready", tasks)

        assert sorted(i.shard for i in gateway.identified) == [
            (shard, SHARD_COUNT) for shard in range(SHARD_COUNT)]  # each shard once, no more
        first, second = ({g.id for g in bot.guilds} for bot in bots)
        assert first == {g for g in GUILDS if (g >> 22) % SHARD_COUNT in (0, 1)}
        assert second == {g for g in GUILDS if (g >> 22) % SHARD_COUNT in (2, 3)}
        assert sorted(bots[0].shards) == [0, 1] and sorted(bots[1].shards) == [2, 3]
        # every IDENTIFY took its bucket's slot (shard % max_concurrency) first
        assert [(s, b) for s, b, _ in bots[0].identify_gate.claims] == [(0, 0), (1, 1)]
        assert [(s, b) for s, b, _ in bots[1].identify_gate.claims] == [(2, 0), (3, 1)]
        for process, ids in zip(processes, ([0, 1], [2, 3]), strict=True):
            beat = await store.heartbeat(process)
            assert (beat["shard_ids"], beat["shards_expected"], beat["shard_count"],
                    beat["guilds"]) == (ids, 2, SHARD_COUNT, 4)
            assert discord_problem(beat, time.time()) is None
        assert await store.heartbeat(host) is None  # no process claims the whole host
        checked = await asyncio.to_thread(healthcheck_of, fast, SHARD_COUNT=SHARD_COUNT,
                                          SHARD_IDS="2,3")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "2/2 shards ready" in checked.stdout
        other = await asyncio.to_thread(healthcheck_of, fast, SHARD_COUNT=SHARD_COUNT,
                                        SHARD_IDS="1")  # no process runs just shard 1
        assert other.returncode == 1 and other.stdout.startswith(
            "unhealthy: Discord: no heartbeat from the bot"), other.stdout + other.stderr
    finally:
        for bot in bots:
            await stop(bot)
        await asyncio.gather(*tasks, return_exceptions=True)
        await gateway.close()
    assert [task.result() for task in tasks] == [None, None]  # a clean close


async def test_contenders_for_one_identify_slot_take_turns(store):
    """Two processes' gates on one store: the same bucket is taken one window apart, another
    bucket at once."""
    window_s = 1.0
    gates = [IdentifyGate(store, http=None, window_s=window_s, max_concurrency=2)
             for _ in range(2)]
    started = time.monotonic()
    await asyncio.gather(gates[0].wait(0, initial=True), gates[1].wait(2, initial=True))
    both_done = time.monotonic() - started
    waits = sorted(claims[0][2] for claims in (gates[0].claims, gates[1].claims))
    assert waits[0] == 0 and waits[1] >= 1  # one went at once, the other waited its turn
    assert both_done >= window_s  # the slot's key expires no sooner than the window
    await gates[0].wait(3, initial=False)  # bucket 1: free
    assert gates[0].claims[-1] == (3, 1, 0)


async def test_without_the_store_identify_falls_back_to_pacing_by_itself():
    unreachable = Store(connect(f"redis://127.0.0.1:{free_port()}/0", max_connections=2,
                                pool_timeout_s=1), prefix="t", user_secret="s")
    gate = IdentifyGate(unreachable, http=None, window_s=0.3, max_concurrency=1)
    try:
        started = time.monotonic()
        await gate.wait(1, initial=False)
        assert time.monotonic() - started >= 0.3 and gate.claims == [(1, 0, 0)]
    finally:
        await unreachable.close()


async def test_sharding_required_by_the_gateway_ends_with_a_clear_message(fast, fake_runtime,
                                                                          monkeypatch):
    gateway = await FakeGateway(GUILDS, shards_needed=2).start()
    gateway.use(monkeypatch)
    bot = gateway_bot(fast, fake_runtime, None)
    try:
        with pytest.raises(Fatal, match="requires sharding.*set SHARD_COUNT"):
            await asyncio.wait_for(app.start(bot, "fake-token"), TIMEOUT_S)
        assert [i.shard for i in gateway.identified] == [None]
    finally:
        await stop(bot)
        await gateway.close()


async def test_too_few_shards_says_to_raise_shard_count(fast, fake_runtime, monkeypatch):
    gateway = await FakeGateway(GUILDS, shards_needed=8).start()
    gateway.use(monkeypatch)
    bot = gateway_bot(fast, fake_runtime, "0")
    try:
        with pytest.raises(Fatal, match="SHARD_COUNT 4 leaves a shard with too many servers"):
            await asyncio.wait_for(app.start(bot, "fake-token"), TIMEOUT_S)
        assert [i.shard for i in gateway.identified] == [(0, SHARD_COUNT)]
    finally:
        await stop(bot)
        await gateway.close()


def test_a_process_is_healthy_when_its_own_shards_are_ready():
    beat = {"at": time.time(), "ready": True, "latency_ms": 40.0, "shard_count": 4,
            "shard_ids": [2, 3], "shards_expected": 2, "shards_ready": 2}
    assert discord_problem(beat, time.time()) is None
    assert "1/2 shards ready" in discord_problem({**beat, "shards_ready": 1}, time.time())
