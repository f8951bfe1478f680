"""IDENTIFY pacing across gateway processes, through the store.

Discord lets a bot start `max_concurrency` sessions per IDENTIFY_WINDOW_S; a shard's rate-limit
bucket is `shard_id % max_concurrency`, and two IDENTIFYs in one bucket within the window are
refused. discord.py paces the shards of one process (by default it sleeps 5 s before each but
the first), not those of other processes sharing the token. The bot's `before_identify_hook`
calls `IdentifyGate.wait`: it claims the bucket's key in Redis for the window (SET NX PX) and
waits while another shard, in this process or another, holds it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import discord

from bot.core.store import StoreUnavailable

if TYPE_CHECKING:
    from bot.core.store import Store

log = logging.getLogger(__name__)

IDENTIFY_WINDOW_S = 5.0  # Discord's: max_concurrency IDENTIFYs per this many seconds


@dataclass
class IdentifyGate:
    """Waits for a shard's IDENTIFY slot; `claims` records (shard id, bucket, times it waited)
    in the order the slots were taken."""

    store: Store
    http: discord.http.HTTPClient | None  # None: max_concurrency is given
    window_s: float = IDENTIFY_WINDOW_S
    max_concurrency: int | None = None  # from GET /gateway/bot on first use
    claims: list[tuple[int | None, int, int]] = field(default_factory=list)

    async def wait(self, shard_id: int | None, *, initial: bool) -> None:
        bucket = (shard_id or 0) % await self._concurrency()
        waits = 0
        try:
            while (left_s := await self.store.take_identify_slot(bucket, self.window_s)) > 0:
                waits += 1
                await asyncio.sleep(left_s)
        except StoreUnavailable as error:
            # Without the store, pace this process's shards as discord.py does by itself.
            log.warning("IDENTIFY not coordinated through the store (%s): waiting %.0f s",
                        error, self.window_s)
            if not initial:
                await asyncio.sleep(self.window_s)
        self.claims.append((shard_id, bucket, waits))

    async def _concurrency(self) -> int:
        if self.max_concurrency is None:
            try:
                _, _, limits = await self.http.get_bot_gateway()
                self.max_concurrency = max(1, int(limits["max_concurrency"]))
            except (discord.DiscordException, aiohttp.ClientError, OSError, KeyError) as error:
                log.warning("cannot read max_concurrency from Discord (%s): one IDENTIFY per "
                            "%.0f s", error, self.window_s)
                self.max_concurrency = 1
        return self.max_concurrency
