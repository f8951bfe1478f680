"""One write scheduler per channel: every send and edit of the bot's replies in a channel (a
thread is a channel of its own) shares that channel's budget, and only so many replies are in
flight there at once.

Discord limits message writes per channel (the figure commonly seen is 5 per 5 s; its docs say
to read the rate-limit headers rather than hard-code it). The budget is a sliding window of
WRITES_PER_WINDOW writes per WINDOW_S, with the limit discord.py has read from those headers
for the channel's message route once it has seen them, and a wait while discord.py knows the
bucket is empty. A streaming reply only writes when the budget has room at once (its text so
far is shown by a later write: pending edits merge); a reply's final writes wait their turn.
Without this, replies stall behind 429s and the backlog grows.

`monotonic` and `sleep` are this module's names so tests can drive them with a clock of their
own.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import discord

WRITES_PER_WINDOW = 5
WINDOW_S = 5.0
REPLIES_IN_FLIGHT = 4  # per channel; past it a message gets BUSY_REPLY (when there is room)
BUSY_REPLY = "I'm answering several messages here already; please ask again in a moment."
_KEPT_IDLE = 1024  # schedulers kept before idle ones are dropped

monotonic = time.monotonic
sleep = asyncio.sleep


def now() -> float:
    return monotonic()


class ChannelWrites:
    """The write budget and the replies in flight of one channel."""

    def __init__(self, channel_id: int, http=None):
        self.channel_id = channel_id
        self._http = http  # discord.py's HTTPClient, whose rate-limit buckets we read
        self._stamps: deque[float] = deque()  # when the writes in the window were made
        self._turns = asyncio.Lock()  # waiting writers go in order, ahead of streaming ones
        self.in_flight = 0

    # --- the budget ---------------------------------------------------------------------------

    def _discord_bucket(self):
        """discord.py's rate-limit bucket for sending in this channel, once it has read
        Discord's headers for it (else None). It keeps them in private fields: read
        defensively."""
        hashes = getattr(self._http, "_bucket_hashes", None)
        buckets = getattr(self._http, "_buckets", None)
        if not isinstance(hashes, dict) or not isinstance(buckets, dict):
            return None
        route = discord.http.Route("POST", "/channels/{channel_id}/messages",
                                   channel_id=self.channel_id)
        bucket_hash = hashes.get(route.key)
        if bucket_hash is None:
            return None
        bucket = buckets.get(f"{bucket_hash}:{route.major_parameters}")
        return bucket if isinstance(getattr(bucket, "limit", None), int) else None

    def _wait_s(self) -> float:
        """How long until the next write fits the budget (0: now)."""
        bucket = self._discord_bucket()
        limit = max(1, bucket.limit) if bucket is not None else WRITES_PER_WINDOW
        moment = now()
        while self._stamps and self._stamps[0] <= moment - WINDOW_S:
            self._stamps.popleft()
        wait = 0.0
        if len(self._stamps) >= limit:
            wait = self._stamps[len(self._stamps) - limit] + WINDOW_S - moment
        expires = getattr(bucket, "expires", None)
        if bucket is not None and bucket.remaining <= 0 and expires is not None:
            wait = max(wait, expires - asyncio.get_running_loop().time())
        return max(0.0, wait)

    def try_take(self) -> bool:
        """Take a write now if the budget has room and no one waits for one."""
        if self._turns.locked() or self._wait_s() > 0:
            return False
        self._stamps.append(now())
        return True

    async def take(self) -> None:
        """Wait for a write's turn, then take it."""
        async with self._turns:
            while (wait := self._wait_s()) > 0:
                await sleep(wait)
            self._stamps.append(now())

    def idle(self) -> bool:
        return self.in_flight == 0 and not self._turns.locked() and self._wait_s() == 0 and (
            not self._stamps)

    # --- replies in flight --------------------------------------------------------------------

    def admit(self) -> bool:
        """Count one more reply in flight, unless REPLIES_IN_FLIGHT are already."""
        if self.in_flight >= REPLIES_IN_FLIGHT:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)


class WriteSchedulers:
    """The ChannelWrites of every channel the bot writes in (idle ones are dropped)."""

    def __init__(self, bot):
        self._bot = bot
        self._channels: dict[int, ChannelWrites] = {}

    def of(self, channel_id: int) -> ChannelWrites:
        found = self._channels.get(channel_id)
        if found is None:
            if len(self._channels) >= _KEPT_IDLE:
                self._channels = {key: writes for key, writes in self._channels.items()
                                  if not writes.idle()}
            found = self._channels[channel_id] = ChannelWrites(channel_id,
                                                               getattr(self._bot, "http", None))
        return found
