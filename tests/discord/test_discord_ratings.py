"""Moderator ratings by reaction, through dpytest's raw reaction events and real Redis."""

from __future__ import annotations

import discord.ext.test as dpytest
from discord_helpers import make_role, member, sent_messages
from store_util import score

from bot.frontends.discord.cogs.replies import THUMBS_DOWN, THUMBS_UP


async def bot_reply(bot, store):
    await dpytest.message(f"<@{bot.user.id}> rate me", member=member("alice"))
    [reply] = await sent_messages()
    return reply, await store.exchanges.for_message(reply.id)


async def test_a_moderators_thumbs_up_counts_and_removal_withdraws(bot, store, own):
    reply, exchange = await bot_reply(bot, store)
    mod = member("mod")

    await dpytest.add_reaction(mod, reply, THUMBS_UP)
    assert await store.exchanges.ratings(exchange.id) == {store.user_hash(mod.id): 1}
    assert [r.exchange.id for r in await own.exchanges.rated()] == [exchange.id]

    await dpytest.remove_reaction(mod, reply, THUMBS_UP)
    assert await store.exchanges.ratings(exchange.id) == {}


async def test_a_members_reaction_is_not_counted(bot, store, own):
    reply, exchange = await bot_reply(bot, store)

    await dpytest.add_reaction(member("alice"), reply, THUMBS_UP)
    await dpytest.add_reaction(member("bob"), reply, THUMBS_DOWN)

    assert await store.exchanges.ratings(exchange.id) == {}
    assert await own.exchanges.rated() == []


async def test_manage_messages_makes_a_moderator(bot, store):
    guild = dpytest.get_config().guilds[0]
    bob = member("bob")
    await dpytest.add_role(bob, make_role(guild, "Helpers", manage_messages=True))
    reply, exchange = await bot_reply(bot, store)

    await dpytest.add_reaction(bob, reply, THUMBS_DOWN)

    assert await store.exchanges.ratings(exchange.id) == {store.user_hash(bob.id): -1}


async def test_switching_thumbs_keeps_the_latest_and_removing_the_old_one_keeps_it(bot, store):
    reply, exchange = await bot_reply(bot, store)
    mod = member("mod")

    await dpytest.add_reaction(mod, reply, THUMBS_DOWN)
    await dpytest.add_reaction(mod, reply, THUMBS_UP)
    await dpytest.remove_reaction(mod, reply, THUMBS_DOWN)

    assert await store.exchanges.ratings(exchange.id) == {store.user_hash(mod.id): 1}


async def test_ratings_work_for_replies_no_longer_in_the_message_cache(bot, store):
    """As after a restart: the message is unknown to the client, the store still knows it."""
    reply, exchange = await bot_reply(bot, store)
    bot._connection._messages.clear()
    assert bot._connection._get_message(reply.id) is None

    await dpytest.add_reaction(member("mod"), reply, THUMBS_UP)

    assert await score(store, exchange.id) == 1


async def test_other_emoji_and_unknown_messages_are_ignored(bot, store, own):
    reply, exchange = await bot_reply(bot, store)
    mod = member("mod")
    await dpytest.add_reaction(mod, reply, "\N{HEAVY BLACK HEART}")
    question = await dpytest.message("not a bot reply", member=member("alice"))
    await dpytest.add_reaction(mod, question, THUMBS_UP)

    assert await store.exchanges.ratings(exchange.id) == {}
    assert await own.exchanges.rated() == []
