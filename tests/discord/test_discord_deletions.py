"""Deleted messages: a question deleted while the bot generates still gets its reply; deleted
questions and context messages leave the store; a deleted bot reply leaves the training data."""

from __future__ import annotations

import discord.ext.test as dpytest
from discord_helpers import delete_messages, member, sent_messages, user_message
from store_util import exchange_count, raw_redis

from bot.frontends.discord.cogs.replies import THUMBS_UP


def mention(bot) -> str:
    return f"<@{bot.user.id}>"


def reactions_on(bot, message) -> list[str]:
    return [emoji for message_id, emoji in bot.own_reactions if message_id == message.id]


def deleting_while_generating(bot, monkeypatch, doomed: list):
    """Make the bot's next reply delete the messages in `doomed` once it is asked for, before
    anything is sent (as a user deleting theirs while the bot thinks)."""
    stream_draft = bot.conversation.stream_draft

    async def stream_then_delete(*args, **kwargs):
        stream = await stream_draft(*args, **kwargs)
        await delete_messages(*doomed, wait=False)
        return stream

    monkeypatch.setattr(bot.conversation, "stream_draft", stream_then_delete)


async def test_a_question_deleted_while_generating_still_gets_its_reply(bot, store, channel,
                                                                      monkeypatch):
    question = user_message(f"{mention(bot)} my card number is 4111", member("alice"), channel)
    deleting_while_generating(bot, monkeypatch, [question])

    [reply] = await sent_messages()

    assert bot.refusals == []
    reference = bot.sent_payloads[-1]["message_reference"]
    assert reference["message_id"] == question.id and not reference["fail_if_not_exists"]
    # The question is gone, so nothing of it is kept and nothing invites a rating.
    assert await store.exchanges.for_message(reply.id) is None
    assert await exchange_count(store, channel.guild.id) == 0
    assert reactions_on(bot, reply) == []


async def test_a_context_message_deleted_while_generating_leaves_the_exchange(bot, store,
                                                                            channel,
                                                                            monkeypatch):
    said = await dpytest.message("my address is 1 Elm Street", member=member("bob"))
    question = user_message(f"{mention(bot)} what did bob say?", member("alice"), channel)
    deleting_while_generating(bot, monkeypatch, [said])

    [reply] = await sent_messages()

    exchange = await store.exchanges.for_message(reply.id)
    assert exchange.user_message_id == question.id
    assert all("Elm Street" not in turn.text for turn in exchange.context)
    assert reactions_on(bot, reply) != []  # the exchange stays and can be rated


async def test_a_deleted_question_and_its_text_as_context_leave_the_store(bot, store, own):
    alice, bob = member("alice"), member("bob")
    question = await dpytest.message(f"{mention(bot)} my phone is 555-0100", member=alice)
    [first] = await sent_messages()
    await dpytest.message(f"{mention(bot)} what is the weather", member=bob)
    [second] = await sent_messages()
    later = await store.exchanges.for_message(second.id)
    assert any("555-0100" in turn.text for turn in later.context)

    await delete_messages(question)

    assert await store.exchanges.for_message(first.id) is None
    later = await store.exchanges.for_message(second.id)
    assert all("555-0100" not in turn.text for turn in later.context)
    assert [t.role for t in later.context] == ["bot"]  # the bot's reply to it stays
    assert (await own.exchanges.stats())["total"]["exchanges"] == 1
    assert not await raw_redis(store).exists(store.keys("ex", "text", question.id))


async def test_a_deleted_bot_reply_is_no_longer_a_training_target(bot, store, own):
    await dpytest.message(f"{mention(bot)} rate me", member=member("alice"))
    [reply] = await sent_messages()
    await dpytest.add_reaction(member("mod"), reply, THUMBS_UP)
    exchange = await store.exchanges.for_message(reply.id)
    assert [r.exchange.id for r in await own.exchanges.rated()] == [exchange.id]

    await delete_messages(reply)

    assert await own.exchanges.rated() == []
    kept = await store.exchanges.get(exchange.id)
    assert kept.reply_deleted and kept.user_message == "rate me"
    assert await store.exchanges.for_message(reply.id) is None


async def test_a_bulk_delete_applies_to_every_message(bot, store, own, channel):
    alice, bob = member("alice"), member("bob")
    chatter = await dpytest.message("my email is bob@example.com", member=bob)
    question = await dpytest.message(f"{mention(bot)} anything new?", member=alice)
    [reply] = await sent_messages()
    await dpytest.message(f"{mention(bot)} and now?", member=member("mod"))
    [other] = await sent_messages()

    await delete_messages(chatter, question)  # a moderator's purge: one bulk event

    assert await store.exchanges.for_message(reply.id) is None
    remaining = await store.exchanges.for_message(other.id)
    assert all("bob@example.com" not in t.text and "anything new" not in t.text
               for t in remaining.context)
    assert (await own.exchanges.stats())["total"]["exchanges"] == 1
