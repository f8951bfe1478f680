"""Discord saying no to a write: 403 (a permission taken away meanwhile), 5xx (Discord's own
trouble, after discord.py's retries), 429 (rate limited, with a retry-after that discord.py
waits out). The bot keeps going, stores nothing it could not show, and while a channel's
bucket is empty its other replies wait instead of writing."""

from __future__ import annotations

import asyncio
import time

import discord.ext.test as dpytest
from discord_helpers import member, sent_messages
from store_util import exchange_count
from stream_util import words


def mention(bot, text: str) -> str:
    return f"<@{bot.user.id}> {text}"


async def test_a_403_on_the_first_send_loses_nothing_and_the_next_message_is_answered(
        scripted_bot, store, channel):
    bot = scripted_bot
    bot.runtime.generator.script(["Nine to five."])
    bot.trouble.append(("send", 403, None))

    await dpytest.message(mention(bot, "when do you open?"), member=member("alice"))

    assert await sent_messages() == []
    assert [(what, status) for what, status, _ in bot.refusals] == [("send", 403)]
    assert await exchange_count(store, channel.guild.id) == 0
    assert bot.event_errors == [] and bot.own_reactions == []

    await dpytest.message(mention(bot, "and on sundays?"), member=member("bob"))
    [reply] = await sent_messages()
    assert reply.content == "Nine to five."
    assert await exchange_count(store, channel.guild.id) == 1


async def test_a_5xx_on_an_edit_stops_the_reply_and_stores_nothing(scripted_bot, store,
                                                                   channel):
    bot = scripted_bot
    streams = bot.runtime.generator.streams
    bot.runtime.generator.script(words(40), before_piece=lambda _: asyncio.sleep(0.05))
    bot.trouble.append(("edit", 503, None))

    await dpytest.message(mention(bot, "tell me a story"), member=member("alice"))

    [reply] = await sent_messages()
    assert [(what, status) for what, status, _ in bot.refusals] == [("edit", 503)]
    assert streams[0].closed and streams[0].handed_out < 40  # generation was stopped
    assert await exchange_count(store, channel.guild.id) == 0
    assert bot.event_errors == [] and bot.own_reactions == []
    assert await store.exchanges.for_message(reply.id) is None


async def test_a_429_empties_the_bucket_and_the_channels_other_replies_wait_it_out(
        scripted_bot, store, channel):
    bot = scripted_bot
    retry_after = 0.6
    bot.runtime.generator.script(words(30), before_piece=lambda _: asyncio.sleep(0.03))
    bot.write_clock = asyncio.get_running_loop().time  # the clock discord.py's buckets use
    bot.trouble.append(("send", 429, retry_after))
    started = time.monotonic()

    await asyncio.gather(*(dpytest.message(mention(bot, f"question {n}"),
                                           member=member(name))
                           for n, name in enumerate(("alice", "bob"))))

    sent = await sent_messages()
    [(_, limited_at, _)] = bot.rate_limited
    during = [at for at in bot.write_times if limited_at < at < limited_at + retry_after]
    assert during == [], (limited_at, bot.write_times)
    assert len(sent) == 2 and bot.refusals == [] and bot.event_errors == []
    whole = "".join(words(30)).strip()
    assert all(bot._connection._get_message(m.id).content == whole for m in sent)
    assert await exchange_count(store, channel.guild.id) == 2
    assert time.monotonic() - started >= retry_after
