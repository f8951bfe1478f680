"""Catching up on what Discord did not report: messages deleted while the bot was not
connected (stopped, or a resume that failed), and deleted channels and threads (Discord sends
no per-message deletes for them).

On start (on_ready, which also follows a failed resume) the bot checks the exchanges each
server stored in the last CATCHUP_S (at most the newest RECENT_KEPT per server: the store's
recent index); on a resume, those stored since the disconnect. Each channel's history is read
once, oldest first, 100 messages a request and at most CATCHUP_MESSAGES, channel after
channel, so a catch-up costs a few reads per active channel and no writes (reads are limited
apart from the message writes each channel's budget shares, channel_writes.py; discord.py
waits out a 429 itself). A stored message missing from that history was deleted: it goes the way of
a live deletion (bot/service/deletions.py). A server channel Discord no longer knows (404) was
deleted: its exchanges go, as they do when the deletion is seen live. A server the bot was
removed from keeps its data: a kick may be a mistake, and the operator deletes a server's data
with `python -m bot servers wipe`.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time

import discord
from discord.ext import commands

from bot.core.store import StoreUnavailable
from bot.core.store.records import Exchange
from bot.frontends.discord import permissions

log = logging.getLogger(__name__)

CATCHUP_S = 24 * 3600.0  # how far back a start checks (the store's recent index: 7 days)
RESUME_MARGIN_S = 60.0  # a resume checks from this long before the disconnect
CATCHUP_MESSAGES = 500  # most history messages read per channel (5 requests)
GONE = object()  # a channel Discord answers 404 for


def message_ids(exchanges: list[Exchange], channel_id: int, since: float) -> set[int]:
    """The Discord messages these exchanges hold (question, reply pieces, context turns) that
    were written since `since`; a thread's starter message (the thread's id, in its parent)
    is not in the thread's history."""
    floor = discord.utils.time_snowflake(datetime.datetime.fromtimestamp(since, datetime.UTC))
    found: set[int] = set()
    for exchange in exchanges:
        found.update(exchange.message_ids)
        found.update(t.message_id for t in exchange.context if t.message_id is not None)
        if exchange.user_message_id is not None:
            found.add(exchange.user_message_id)
    return {i for i in found if i >= floor and i != channel_id}


class CatchUp(commands.Cog):
    def __init__(self, bot):
        self.bot = bot
        self._turn = asyncio.Lock()  # one catch-up at a time
        self._down_since: float | None = None  # when the gateway dropped (Unix time)

    # --- when -----------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        self._down_since = None
        await self.catch_up(time.time() - CATCHUP_S)

    @commands.Cog.listener()
    async def on_disconnect(self) -> None:
        if self._down_since is None:
            self._down_since = time.time()

    @commands.Cog.listener()
    async def on_resumed(self) -> None:
        """Discord replays what a resumed session missed; this covers what it drops."""
        since = (self._down_since or time.time()) - RESUME_MARGIN_S
        self._down_since = None
        await self.catch_up(since)

    @commands.Cog.listener()
    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        await self.bot.deletions.channel_deleted(channel.guild.id, channel.id)

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        await self.bot.deletions.channel_deleted(payload.guild_id, payload.thread_id)

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        log.info("removed from server %s: its data is kept (python -m bot servers wipe %s --yes "
                 "deletes it)", guild.id, guild.id)

    # --- how ------------------------------------------------------------------------------------

    async def catch_up(self, since: float) -> None:
        """Apply what was deleted since `since` in every server the bot is in (and DMs)."""
        if self.bot.store is None:
            return
        async with self._turn:
            try:
                for tenant in await self.bot.store.tenants():
                    if (self.bot.get_guild(tenant) is not None
                            or tenant == self.bot.settings.home_guild_id):
                        await self._tenant(tenant, since)
            except StoreUnavailable as error:
                log.warning("catching up on deletions stopped: the store is unavailable (%s)",
                            error)

    async def _tenant(self, tenant: int, since: float) -> None:
        channels: dict[int, list[Exchange]] = {}
        for exchange in await self.bot.store.tenant(tenant).exchanges.recent(since):
            if exchange.channel_id is not None:
                channels.setdefault(exchange.channel_id, []).append(exchange)
        for channel_id, exchanges in channels.items():
            guild_id = exchanges[0].guild_id
            if guild_id is not None and not self._available(guild_id):
                continue
            channel = await self._channel(channel_id)
            if channel is GONE:
                if guild_id is not None:  # a DM channel is never deleted
                    await self.bot.deletions.channel_deleted(tenant, channel_id)
                continue
            ids = message_ids(exchanges, channel_id, since)
            if channel is None or not ids:
                continue
            gone = await self._missing(channel, ids)
            if gone is GONE:
                await self.bot.deletions.channel_deleted(tenant, channel_id)
            elif gone:
                log.info("catching up: %d message(s) deleted in channel %s while the bot "
                         "was not connected", len(gone), channel_id)
                await self.bot.deletions.deleted(gone)

    def _available(self, guild_id: int) -> bool:
        """Whether the bot is in that server and Discord has it (not in an outage, when its
        channels are unknown and nothing may be taken for deleted)."""
        guild = self.bot.get_guild(guild_id)
        return guild is not None and not guild.unavailable

    async def _channel(self, channel_id: int):
        """The channel (a thread too, archived ones fetched), GONE, or None when Discord
        does not say."""
        channel = self.bot.get_channel(channel_id)
        if channel is not None:
            return channel
        try:
            return await self.bot.fetch_channel(channel_id)
        except discord.NotFound:
            return GONE
        except discord.HTTPException as error:  # e.g. no access any more
            log.info("catching up: channel %s not checked (%s)", channel_id, error)
            return None

    async def _missing(self, channel, ids: set[int]):
        """Those of `ids` no longer in the channel's history (GONE: the channel is)."""
        if not permissions.may(channel, "read_message_history"):
            log.info("catching up: channel %s not checked (no Read Message History)",
                     channel.id)
            return set()
        seen: set[int] = set()
        try:
            async for message in channel.history(limit=CATCHUP_MESSAGES, oldest_first=True,
                                                  after=discord.Object(min(ids) - 1)):
                seen.add(message.id)
        except discord.NotFound:
            return GONE
        except discord.HTTPException as error:
            log.info("catching up: channel %s not checked (%s)", channel.id, error)
            return set()
        if len(seen) >= CATCHUP_MESSAGES:  # only what the read covered
            ids = {i for i in ids if i <= max(seen)}
        return ids - seen


async def setup(bot) -> None:
    await bot.add_cog(CatchUp(bot))
