"""How people address the bot beyond a plain mention: its own role's mention is answered,
attachments it cannot read are said to be ignored; and the gateway's "sharding required"
close ends the bot with a clear message."""

from __future__ import annotations

from types import SimpleNamespace

import discord
import discord.ext.test as dpytest
import pytest
from discord.ext.test import backend, factories
from discord_helpers import attachment, member, sent_messages, user_message
from store_util import exchange_count

from bot.core.fatal import Fatal
from bot.frontends.discord import app
from bot.frontends.discord.cogs.chat import ATTACHMENTS_IGNORED


def own_role(bot, guild) -> discord.Role:
    """The role Discord makes for a bot when it joins (managed, tagged with the bot's id)."""
    role_id = factories.make_id()
    backend.get_state().parse_guild_role_create({"guild_id": str(guild.id), "role": {
        "id": str(role_id), "name": bot.user.name, "color": 0, "hoist": False, "position": 1,
        "permissions": "0", "managed": True, "mentionable": True, "flags": 0,
        "tags": {"bot_id": str(bot.user.id)}}})
    return guild.get_role(role_id)


async def test_the_bots_role_mention_is_answered_like_its_own(scripted_bot, store, channel):
    bot = scripted_bot
    bot.runtime.generator.script(["Nine to five."])
    role = own_role(bot, channel.guild)
    assert channel.guild.self_role == role

    await dpytest.message(f"<@&{role.id}> when do you open?", member=member("alice"))

    [reply] = await sent_messages()
    exchange = await store.exchanges.for_message(reply.id)
    assert reply.content == "Nine to five."
    assert exchange.user_message == "when do you open?"  # the role mention taken out


async def test_another_roles_mention_is_not_the_bots(scripted_bot, store, channel):
    bot = scripted_bot
    own_role(bot, channel.guild)
    other = backend.make_role("Helpers", channel.guild)

    await dpytest.message(f"<@&{other.id}> anyone?", member=member("alice"))

    assert await sent_messages() == []


async def test_attachments_alone_get_a_note_and_nothing_is_stored(scripted_bot, store,
                                                                  channel):
    bot = scripted_bot
    user_message(f"<@{bot.user.id}>", member("alice"), channel, attachments=[attachment()])

    [note] = await sent_messages()

    assert note.content == ATTACHMENTS_IGNORED
    assert await exchange_count(store, channel.guild.id) == 0


async def test_words_with_attachments_are_answered_with_the_note(scripted_bot, store,
                                                                 channel):
    bot = scripted_bot
    bot.runtime.generator.script(["It looks fine."])
    user_message(f"<@{bot.user.id}> is this right?", member("alice"), channel,
                 attachments=[attachment()])

    note, reply = await sent_messages()

    assert note.content == ATTACHMENTS_IGNORED and reply.content == "It looks fine."
    assert await store.exchanges.for_message(reply.id) is not None


class Closing:
    """A client whose gateway closes with `code` as it starts."""

    def __init__(self, code: int):
        self.code = code

    async def start(self, token: str) -> None:
        raise discord.ConnectionClosed(SimpleNamespace(close_code=self.code), shard_id=None)


async def test_sharding_required_ends_with_a_clear_message():
    with pytest.raises(Fatal, match="set SHARD_COUNT"):
        await app.start(Closing(4011), "token")
    with pytest.raises(discord.ConnectionClosed):  # any other close is not ours to explain
        await app.start(Closing(4003), "token")
