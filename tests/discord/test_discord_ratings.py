"""Moderator ratings by reaction, through dpytest's raw reaction events and real Redis."""

from __future__ import annotations

import discord.ext.test as dpytest
from discord.ext.test import backend
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


def clear_reactions(reply, emoji: str | None = None) -> None:
    """Someone with Manage Messages clears every reaction (or every `emoji`) from `reply`, as
    MESSAGE_REACTION_REMOVE_ALL / _REMOVE_EMOJI bring it (no per-user removal events)."""
    data = {"channel_id": str(reply.channel.id), "message_id": str(reply.id),
            "guild_id": str(reply.guild.id)}
    state = backend.get_state()
    if emoji is None:
        state.parse_message_reaction_remove_all(data)
    else:
        state.parse_message_reaction_remove_emoji({**data, "emoji": {"id": None,
                                                                     "name": emoji}})


async def test_clearing_all_reactions_withdraws_every_rating(bot, store):
    reply, exchange = await bot_reply(bot, store)
    await dpytest.add_reaction(member("mod"), reply, THUMBS_UP)
    await dpytest.add_reaction(member("admin"), reply, THUMBS_DOWN)
    assert len(await store.exchanges.ratings(exchange.id)) == 2

    clear_reactions(reply)
    await dpytest.run_all_events()

    assert await store.exchanges.ratings(exchange.id) == {}
    assert bot.event_errors == []


async def test_clearing_one_emoji_withdraws_only_its_ratings(bot, store):
    reply, exchange = await bot_reply(bot, store)
    await dpytest.add_reaction(member("mod"), reply, THUMBS_UP)
    await dpytest.add_reaction(member("admin"), reply, THUMBS_DOWN)

    clear_reactions(reply, THUMBS_UP)
    await dpytest.run_all_events()

    assert await store.exchanges.ratings(exchange.id) == {
        store.user_hash(member("admin").id): -1}
    clear_reactions(reply, "\N{GRINNING FACE}")  # not a rating: nothing changes
    await dpytest.run_all_events()
    assert len(await store.exchanges.ratings(exchange.id)) == 1
