"""When Redis goes away under a running bot: a mention gets a short apology, a moderator's
rating is tried again and, when it still cannot be stored, reported to the moderator (never a
counted-looking 👍 that was dropped). No event handler raises."""

from __future__ import annotations

import discord
import discord.ext.test as dpytest
import pytest
import redis.asyncio as aioredis
from discord.ext.test import callbacks
from discord_helpers import make_role, member, running_bot, sent_messages, slash_as
from fake_generator import FakeGenerator
from stream_util import words

from bot.core.generation import GenerationConfig
from bot.core.local_redis import LocalRedis
from bot.core.store import Store
from bot.frontends.discord.cogs.replies import THUMBS_UP
from bot.service import retry
from bot.service.drafts import CUT_NOTES, STORE_REPLY


@pytest.fixture
async def own_redis(tmp_path):
    directory = tmp_path / "redis"
    directory.mkdir()
    server = LocalRedis(directory, appendonly=True).start()  # keeps its data over a restart
    yield server
    server.close()


@pytest.fixture
async def fragile_bot(fast, own_redis, monkeypatch):
    """The bot on a Redis of its own, which a test may stop, and a FakeGenerator."""
    monkeypatch.setattr(retry, "RETRY_DELAYS_S", (0.01, 0.01))
    store = Store(aioredis.from_url(own_redis.url), prefix=fast.key_prefix,
                  user_secret="test-secret-for-hmac")
    await store.ping()
    generator = FakeGenerator(GenerationConfig.from_settings(fast), store.registry.blob)
    async with running_bot(fast, store, generator) as bot:
        guild = dpytest.get_config().guilds[0]
        await dpytest.add_role(member("mod"), make_role(guild, fast.moderator_role))
        yield bot, store
    await store.close()


async def test_a_mention_while_redis_is_down_gets_an_apology(fragile_bot, own_redis):
    bot, _ = fragile_bot
    own_redis.stop()
    await dpytest.message(f"<@{bot.user.id}> are you there?", member=member("alice"))
    [answer] = await sent_messages()
    assert answer.content == STORE_REPLY
    assert bot.event_errors == []


async def test_a_rating_that_cannot_be_stored_is_reported_to_the_moderator(fragile_bot,
                                                                         own_redis):
    bot, store = fragile_bot
    await dpytest.message(f"<@{bot.user.id}> rate me", member=member("alice"))
    [reply] = await sent_messages()
    mod = member("mod")
    removed = []

    async def record_removal(message, emoji, who):
        removed.append((message.id, str(emoji), who.id))

    callbacks.set_callback(record_removal, "remove_reaction")
    guild = reply.guild  # taking off another's reaction needs Manage Messages
    await dpytest.add_role(guild.me, make_role(guild, "Bot", manage_messages=True))
    own_redis.stop()

    await dpytest.add_reaction(mod, reply, THUMBS_UP)

    [note] = [m for m in await sent_messages() if isinstance(m.channel, discord.DMChannel)]
    assert note.channel.id == mod.dm_channel.id  # a direct message to the moderator
    assert note.content.startswith(f"Your {THUMBS_UP} on https://discord.com/channels/")
    assert "was not counted" in note.content and "rate again" in note.content
    # The moderator's reaction was taken off, so it no longer looks counted.
    assert removed == [(reply.id, THUMBS_UP, mod.id)]
    assert bot.event_errors == []

    own_redis.start()  # back: the same reaction counts again
    await dpytest.add_reaction(mod, reply, THUMBS_UP)
    exchange = await store.exchanges.for_message(reply.id)
    assert await store.exchanges.ratings(exchange.id) == {store.user_hash(mod.id): 1}


async def test_without_manage_messages_a_lost_rating_is_reported_and_left_on(fragile_bot,
                                                                            own_redis):
    bot, _ = fragile_bot
    await dpytest.message(f"<@{bot.user.id}> rate me", member=member("alice"))
    [reply] = await sent_messages()
    removed = []

    async def record_removal(message, emoji, who):
        removed.append((message.id, str(emoji), who.id))

    callbacks.set_callback(record_removal, "remove_reaction")
    own_redis.stop()

    await dpytest.add_reaction(member("mod"), reply, THUMBS_UP)

    [note] = [m for m in await sent_messages() if isinstance(m.channel, discord.DMChannel)]
    assert "was not counted" in note.content
    assert removed == []  # the invite grants no Manage Messages: not even tried
    assert bot.event_errors == []
    own_redis.start()


async def test_a_streamed_reply_the_store_cannot_keep_says_so_and_invites_no_rating(
        fragile_bot, own_redis, monkeypatch):
    bot, store = fragile_bot

    def step(number: int) -> None:
        if number == 3:  # Redis goes away while the reply is being shown
            own_redis.stop()

    bot.runtime.generator.script(words(6), before_piece=step)

    await dpytest.message(f"<@{bot.user.id}> tell me", member=member("alice"))

    [reply] = await sent_messages()
    shown = bot._connection._get_message(reply.id).content
    assert shown == "word0 word1 word2 word3 word4 word5 " + CUT_NOTES["unavailable"]
    assert bot.own_reactions == [] and bot.event_errors == []
    own_redis.start()
    assert await store.exchanges.for_message(reply.id) is None


async def test_redis_down_is_answered_with_a_short_apology(fragile_bot, own_redis, caplog):
    """Redis is down: the moderator gets a short apology, not a stack trace; one log line."""
    bot, _ = fragile_bot
    own_redis.stop()
    shown = await slash_as(bot, member("mod"), dpytest.get_config().channels[0], "stats")
    assert shown["content"].startswith("Sorry, the store is unavailable right now")
    assert shown["ephemeral"]
    assert "stats not done: the store is unavailable" in caplog.text
    assert "Traceback" not in caplog.text
