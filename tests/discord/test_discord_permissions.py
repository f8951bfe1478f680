"""The bot checks its own permissions before it tries: where it cannot send it does not
generate (no typing, no 403s), `/chat on` says which permission is missing, and what the
optional permissions give is left out without them."""

from __future__ import annotations

import logging

import discord
import discord.ext.test as dpytest
from discord.ext.test import backend, factories
from discord_helpers import member, sent_messages, slash

from bot.frontends.discord.cogs.replies import THUMBS_DOWN, THUMBS_UP


def forbid(channel, **overrides) -> None:
    """Take permissions from the bot in `channel`, as a server admin would: Discord sends
    CHANNEL_UPDATE with a member overwrite (type 1; dpytest's own helper writes "member",
    which discord.py does not read as a member's)."""
    allow, deny = discord.PermissionOverwrite(**overrides).pair()
    data = factories.dict_from_channel(channel)
    data["permission_overwrites"] = [{"id": str(channel.guild.me.id), "type": 1,
                                      "allow": str(allow.value), "deny": str(deny.value)}]
    backend.get_state().parse_channel_update(data)
    assert all(not getattr(channel.permissions_for(channel.guild.me), flag)
               for flag, on in overrides.items() if not on)


async def test_where_it_cannot_send_it_neither_generates_nor_tries(scripted_bot, channel,
                                                                  caplog):
    bot = scripted_bot
    bot.runtime.generator.script(["Hello there."])
    forbid(channel, send_messages=False)

    with caplog.at_level(logging.WARNING):
        for text in ("hello?", "anyone?"):
            await dpytest.message(f"<@{bot.user.id}> {text}", member=member("alice"))

    assert await sent_messages() == []
    assert bot.runtime.generator.streams == [] and bot.typing_channels == []
    assert bot.refusals == [] and bot.event_errors == []
    lacks = [r for r in caplog.records if "lacks Send Messages" in r.getMessage()]
    assert len(lacks) == 1  # once per channel, not per message


async def test_chat_on_names_the_missing_permission_and_changes_nothing(scripted_bot, store,
                                                                       channel):
    bot = scripted_bot
    forbid(channel, send_messages=False)

    refused = await slash(bot, "admin", "chat", "on")

    assert refused["ephemeral"] and "Send Messages" in refused["content"]
    assert refused["content"].startswith("Nothing changed")
    assert not await bot.conversation.answers_every_message(channel.id, None)


async def test_chat_on_without_optional_permissions_says_what_is_missing(scripted_bot,
                                                                         channel):
    bot = scripted_bot
    forbid(channel, add_reactions=False)

    done = await slash(bot, "admin", "chat", "on")

    assert "Add Reactions" in done["content"] and "Read Message History" not in done["content"]
    assert await bot.conversation.answers_every_message(channel.id, None)


async def test_without_add_reactions_the_reply_comes_without_ratings(scripted_bot, store,
                                                                     channel):
    bot = scripted_bot
    bot.runtime.generator.script(["We open at nine."])
    forbid(channel, add_reactions=False)

    await dpytest.message(f"<@{bot.user.id}> when do you open?", member=member("alice"))

    [reply] = await sent_messages()
    assert reply.content == "We open at nine."
    assert await store.exchanges.for_message(reply.id) is not None
    assert (reply.id, THUMBS_UP) not in bot.own_reactions
    assert (reply.id, THUMBS_DOWN) not in bot.own_reactions and bot.own_reactions == []
