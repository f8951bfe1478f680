"""Deletions Discord does not report one by one: messages deleted while the bot was not
connected are caught up at start and on a resume; a deleted channel or thread takes its
exchanges with it."""

from __future__ import annotations

import logging
import sys
import time

import discord.ext.test as dpytest
from discord_helpers import (
    delete_channel,
    make_text_channel,
    make_thread,
    member,
    refusal,
    sent_messages,
    vanish,
)
from store_util import raw_redis
from test_discord_permissions import forbid

from bot.frontends.discord.cogs import catchup
from bot.frontends.discord.cogs.replies import THUMBS_UP


def cog_module(bot):
    """The catch-up cog's module as the bot loaded it (discord.py loads an extension anew)."""
    return sys.modules[type(bot.get_cog("CatchUp")).__module__]


async def ask(bot, text: str, who: str = "alice", channel=None):
    """`who` asks the bot `text` (in `channel`, default the first); the question, the bot's
    reply and its stored exchange."""
    channel = channel or dpytest.get_config().channels[0]
    question = await dpytest.message(f"<@{bot.user.id}> {text}", channel=channel,
                                     member=member(who, channel.guild))
    [reply] = await sent_messages()
    return question, reply, await bot.store.exchanges.for_message(reply.id)


async def test_messages_deleted_while_the_bot_was_down_leave_the_store_at_start(bot, store,
                                                                              own):
    question, _, first = await ask(bot, "my phone is 555-0100")
    _, rated_reply, second = await ask(bot, "what is the weather", who="bob")
    assert any("555-0100" in turn.text for turn in second.context)
    await dpytest.add_reaction(member("mod"), rated_reply, THUMBS_UP)
    _, _, untouched = await ask(bot, "and tomorrow?", who="mod")

    vanish(question, rated_reply)  # while the bot was stopped
    bot.dispatch("ready")
    await dpytest.run_all_events()

    assert not await store.exchanges.exists(first.id)  # its question is gone
    kept = await store.exchanges.get(second.id)
    assert kept.reply_deleted and await own.exchanges.rated() == []
    assert all("555-0100" not in turn.text for turn in kept.context)
    assert await store.exchanges.get(untouched.id) == untouched  # nothing else changed
    channel = dpytest.get_config().channels[0]
    assert bot.history_reads == [(channel.id, 100)]  # one read for the whole channel


async def test_a_resume_catches_up_on_deletions_since_the_disconnect(bot, store):
    question, _, exchange = await ask(bot, "my card number is 4111")

    bot.dispatch("disconnect")
    await dpytest.run_all_events()
    vanish(question)  # a deletion the resumed session did not replay
    bot.dispatch("resumed")
    await dpytest.run_all_events()

    assert not await store.exchanges.exists(exchange.id)


async def test_a_resume_checks_only_what_was_stored_since_shortly_before_the_disconnect(
        bot, store, own, channel):
    old_question, _, old = await ask(bot, "an old question")
    # Stored two hours before the disconnect (as the store's recent index says).
    await raw_redis(store).zadd(own.exchanges.keys.recent_exchanges, {old.id: time.time() - 7200})
    other = make_text_channel(channel.guild)  # (not in the old one's channel history)
    new_question, _, new = await ask(bot, "a new question", who="bob", channel=other)

    bot.dispatch("disconnect")
    await dpytest.run_all_events()
    vanish(old_question, new_question)
    bot.dispatch("resumed")
    await dpytest.run_all_events()

    assert not await store.exchanges.exists(new.id)
    assert await store.exchanges.exists(old.id)  # bounded: older than the disconnect
    assert bot.history_reads == [(other.id, 100)]


async def test_a_deleted_channel_takes_its_exchanges_with_it(bot, store, own, channel):
    other = make_text_channel(channel.guild)
    _, _, there = await ask(bot, "my secret plan", channel=other)
    _, _, here = await ask(bot, "hello")

    await delete_channel(other)

    assert not await store.exchanges.exists(there.id)
    assert await store.exchanges.exists(here.id)
    assert (await own.exchanges.stats())["total"]["exchanges"] == 1
    assert not await raw_redis(store).exists(own.exchanges.keys.channel_exchanges(other.id))


async def test_a_deleted_thread_and_a_deleted_channel_take_their_threads_exchanges(
        bot, store, channel):
    first, second = make_thread(channel, "first"), make_thread(channel, "second")
    _, _, in_first = await ask(bot, "thread one", channel=first)
    _, _, in_second = await ask(bot, "thread two", channel=second)
    _, _, in_channel = await ask(bot, "in the channel")

    await delete_channel(first)
    assert not await store.exchanges.exists(in_first.id)
    assert await store.exchanges.exists(in_second.id)

    await delete_channel(channel)  # its threads go with it, without events of their own
    assert not await store.exchanges.exists(in_second.id)
    assert not await store.exchanges.exists(in_channel.id)


async def test_a_channel_deleted_while_the_bot_was_down_is_caught_at_start(bot, store,
                                                                          channel):
    other = make_text_channel(channel.guild)
    _, _, there = await ask(bot, "my secret plan", channel=other)
    _, _, here = await ask(bot, "hello")

    await delete_channel(other, seen=False)
    bot.dispatch("ready")
    await dpytest.run_all_events()

    assert not await store.exchanges.exists(there.id)
    assert await store.exchanges.exists(here.id)


async def test_nothing_is_taken_for_deleted_in_a_server_discord_has_not_sent(bot, store,
                                                                              channel,
                                                                              monkeypatch):
    other = make_text_channel(channel.guild)
    question, _, exchange = await ask(bot, "my secret plan", channel=other)
    vanish(question)
    await delete_channel(other, seen=False)
    monkeypatch.setattr(channel.guild, "unavailable", True)  # a Discord outage

    bot.dispatch("ready")
    await dpytest.run_all_events()

    assert await store.exchanges.get(exchange.id) == exchange


async def test_being_removed_from_a_server_keeps_its_data_and_says_how_to_delete_it(
        bot, store, channel, caplog):
    _, _, exchange = await ask(bot, "hello")

    with caplog.at_level(logging.INFO, logger=catchup.__name__):
        bot.dispatch("guild_remove", channel.guild)
        await dpytest.run_all_events()

    assert await store.exchanges.exists(exchange.id)  # a kick may be a mistake
    assert f"python -m bot servers wipe {channel.guild.id} --yes" in caplog.text


async def test_only_what_the_bounded_read_covered_is_judged(bot, store, monkeypatch):
    monkeypatch.setattr(cog_module(bot), "CATCHUP_MESSAGES", 2)
    first_question, _, first = await ask(bot, "my phone is 555-0100")
    _, _, second = await ask(bot, "and the weather?", who="bob")

    vanish(first_question)
    bot.dispatch("ready")
    await dpytest.run_all_events()

    assert not await store.exchanges.exists(first.id)
    # Its question and reply lie past the two messages read: not taken for deleted.
    assert (await store.exchanges.get(second.id)).reply_deleted is False
    assert await store.exchanges.for_message(second.message_id) is not None


async def test_without_read_message_history_or_on_a_failed_read_nothing_is_taken_for_deleted(
        bot, store, channel, monkeypatch):
    question, _, exchange = await ask(bot, "hello")
    vanish(question)

    forbid(channel, read_message_history=False)
    bot.dispatch("ready")
    await dpytest.run_all_events()
    assert bot.history_reads == []

    forbid(channel, read_message_history=True)
    read = bot.http.logs_from

    async def failing(channel_id, limit, before=None, after=None, around=None):
        if after is None:
            return await read(channel_id, limit, before=before, after=after, around=around)
        raise refusal(None, "history", 503, 0, "Service Unavailable")

    monkeypatch.setattr(bot.http, "logs_from", failing)
    bot.dispatch("ready")
    await dpytest.run_all_events()

    assert await store.exchanges.get(exchange.id) == exchange
