"""Replies streaming in one channel share its write budget (channel_writes.py): sends and edits
of all of them never exceed WRITES_PER_WINDOW in any WINDOW_S, final edits included; past
REPLIES_IN_FLIGHT a message gets a short "busy" note; discord.py's rate-limit bucket for the
channel, once known, sets the limit.

The replies run on a FakeGenerator whose pieces move a fake clock, which also drives the
budget's waits, so a many-second stream takes a moment.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import discord
import discord.ext.test as dpytest
import pytest
from discord_helpers import FakeClock, member, sent_messages
from store_util import exchange_count
from stream_util import words

from bot.frontends.discord import channel_writes
from bot.frontends.discord.channel_writes import (
    BUSY_REPLY,
    REPLIES_IN_FLIGHT,
    WINDOW_S,
    WRITES_PER_WINDOW,
    ChannelWrites,
)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(channel_writes, "monotonic", clock)
    monkeypatch.setattr(channel_writes, "sleep", clock.sleep)
    return clock


def busiest_window(times: list[float]) -> int:
    """The most writes in any WINDOW_S-long window [t, t + WINDOW_S)."""
    return max((sum(1 for other in times if start <= other < start + WINDOW_S)
                for start in times), default=0)


async def stream_in_one_channel(bot, clock, count: int) -> list[discord.Message]:
    """`count` people's questions at once; each reply streams 60 words, 0.1 s apart."""

    async def step(_number: int) -> None:
        clock.advance(0.1)

    bot.runtime.generator.script(words(60), before_piece=step)
    askers = [member(name) for name in ("alice", "bob")]
    await asyncio.gather(*(dpytest.message(f"<@{bot.user.id}> question {n}",
                                           member=askers[n % 2]) for n in range(count)))
    return await sent_messages()


async def test_four_replies_streaming_in_one_channel_share_its_budget(scripted_bot, store,
                                                                      clock, channel):
    bot = scripted_bot
    bot.write_clock = clock

    sent = await stream_in_one_channel(bot, clock, 4)

    assert len(sent) == 4 and bot.refusals == []
    assert busiest_window(bot.write_times) <= WRITES_PER_WINDOW, bot.write_times
    whole = "".join(words(60)).strip()
    for message in sent:  # each reply is whole, as stored
        exchange = await store.exchanges.for_message(message.id)
        assert bot._connection._get_message(message.id).content == exchange.reply == whole
    assert len(bot.edits) >= 4  # they streamed, not just sent


async def test_twenty_replies_keep_the_budget_and_the_cap_answers_busy(scripted_bot, store,
                                                                       clock, channel):
    bot = scripted_bot
    bot.write_clock = clock

    sent = await stream_in_one_channel(bot, clock, 20)

    assert busiest_window(bot.write_times) <= WRITES_PER_WINDOW, bot.write_times
    busy = [m for m in sent if m.content == BUSY_REPLY]
    answered = [m for m in sent if m.content != BUSY_REPLY]
    assert busy and len(answered) >= REPLIES_IN_FLIGHT
    assert await exchange_count(store, channel.guild.id) == len(answered)
    whole = "".join(words(60)).strip()
    assert all(bot._connection._get_message(m.id).content == whole for m in answered)
    assert len(sent) <= 20 and bot.refusals == []


def discord_knows(limit: int, remaining: int, channel_id: int, expires_in: float | None = None):
    """An HTTP client whose rate-limit bucket for sending in `channel_id` says `limit` and
    `remaining` (discord.py's own Ratelimit, as it fills it from Discord's headers)."""
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=channel_id)
    bucket = discord.http.Ratelimit(None)
    bucket.limit, bucket.remaining = limit, remaining
    if expires_in is not None:
        bucket.expires = asyncio.get_running_loop().time() + expires_in
    return SimpleNamespace(_bucket_hashes={route.key: "abc"},
                           _buckets={f"abc:{route.major_parameters}": bucket})


async def test_the_budget_defaults_to_five_per_five_seconds(clock):
    writes = ChannelWrites(7, http=None)
    assert [writes.try_take() for _ in range(6)] == [True] * 5 + [False]
    await writes.take()  # waits (on the clock) until the oldest write leaves the window
    assert clock.now == WINDOW_S


async def test_the_budget_follows_the_limit_discord_py_read(clock):
    writes = ChannelWrites(7, http=discord_knows(limit=2, remaining=2, channel_id=7))
    assert [writes.try_take() for _ in range(3)] == [True, True, False]
    clock.advance(WINDOW_S)
    assert writes.try_take()


async def test_an_empty_discord_bucket_is_waited_for():
    writes = ChannelWrites(7, http=discord_knows(limit=5, remaining=0, channel_id=7,
                                                 expires_in=0.3))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not writes.try_take()
    await writes.take()
    assert loop.time() - started >= 0.25
