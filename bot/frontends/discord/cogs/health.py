"""The bot's heartbeat: every HEARTBEAT_S (and at once on a disconnect or resume) it writes how
its Discord connection is (gateway latency, ready shards; reconnecting counts as not ready) to
the store, where `deploy/healthcheck.py --discord` reads it.

The record is keyed by host name (a container's, or a machine's) and, for a process that runs
SHARD_IDS, its shards (keys.gateway_process), so the health check run beside a process with
the same settings reads that process's; it expires after HEARTBEAT_TTL_S, so a bot that hangs
or stops is seen as such.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time

from discord.ext import commands, tasks

from bot.core.store import StoreUnavailable
from bot.core.store.keys import gateway_process

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
HEARTBEAT_TTL_S = 3 * HEARTBEAT_S


def _ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds, None when not measured yet (discord.py says inf or nan)."""
    if seconds is None or not math.isfinite(seconds):
        return None
    return round(seconds * 1000, 1)


def connected(bot) -> bool:
    """Ready and not reconnecting: discord.py's is_ready() stays true while the gateway
    reconnects, so the Health cog notes disconnects and resumes (`gateway_up`)."""
    return bot.is_ready() and not bot.is_closed() and getattr(bot, "gateway_up", True)


def heartbeat_of(bot) -> dict:
    """How the client's gateway connection is, as JSON-ready numbers; `shards_expected` is how
    many shards this process runs (its SHARD_IDS, or all of them)."""
    shards = getattr(bot, "shards", None)
    own_ids = getattr(bot, "shard_ids", None)
    if shards:  # an auto-sharded bot
        states = [{"id": shard_id, "ready": not info.is_closed(), "latency_ms": _ms(info.latency)}
                  for shard_id, info in sorted(shards.items())]
        count = bot.shard_count or len(states)
    else:  # a plain bot, or a sharded one before its shards connect
        states = [{"id": 0, "ready": connected(bot), "latency_ms": _ms(bot.latency)}]
        count = getattr(bot, "shard_count", None) or 1
    host = socket.gethostname()
    return {"at": time.time(), "host": host, "process": gateway_process(host, own_ids),
            "pid": os.getpid(), "ready": connected(bot), "latency_ms": _ms(bot.latency),
            "shard_count": count, "shard_ids": own_ids,
            "shards_expected": len(own_ids) if own_ids else count,
            "shards_ready": sum(1 for state in states if state["ready"]), "shards": states,
            "guilds": len(bot.guilds)}


class Health(commands.Cog):
    def __init__(self, bot):
        self.bot = bot

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Beat once connected (a bot that only lists or syncs its commands never is)."""
        self.bot.gateway_up = True
        if not self.beat.is_running():
            self.beat.start()

    @commands.Cog.listener()
    async def on_disconnect(self) -> None:
        """Reconnecting is not ready: say so at once rather than at the next beat."""
        self.bot.gateway_up = False
        if self.beat.is_running():
            await self.beat()

    @commands.Cog.listener()
    async def on_resumed(self) -> None:
        self.bot.gateway_up = True
        if self.beat.is_running():
            await self.beat()

    async def cog_unload(self) -> None:
        self.beat.cancel()

    async def write(self) -> dict:
        beat = heartbeat_of(self.bot)
        await self.bot.store.write_heartbeat(beat["process"], beat, HEARTBEAT_TTL_S)
        return beat

    @tasks.loop(seconds=HEARTBEAT_S)
    async def beat(self) -> None:
        try:
            await self.write()
        except StoreUnavailable as error:  # the health check will say so too
            log.warning("heartbeat not written: the store is unavailable (%s)", error)


async def setup(bot) -> None:
    await bot.add_cog(Health(bot))
