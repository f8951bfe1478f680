"""`/forget me` deletes everything the store holds of the person: afterwards no key and no
value under the bot's prefix holds their hash or their words, and the counters stay right."""

from __future__ import annotations

import discord.ext.test as dpytest
from discord_helpers import (
    dm_reply,
    make_role,
    member,
    running_bot,
    sent_messages,
    slash_as,
)
from store_util import raw_redis

from bot.frontends.discord.cogs.replies import THUMBS_DOWN, THUMBS_UP


async def everything_under(store) -> list[bytes]:
    """Every key name and every stored string, field, member and stream entry."""
    found, redis = [], raw_redis(store)
    async for key in redis.scan_iter(match=store.keys("*")):
        found.append(key)
        kind = (await redis.type(key)).decode()
        if kind == "string":
            found.append(await redis.get(key))
        elif kind == "hash":
            found += [part for pair in (await redis.hgetall(key)).items() for part in pair]
        elif kind in ("set", "zset"):
            found += list(await redis.smembers(key) if kind == "set"
                          else await redis.zrange(key, 0, -1))
        elif kind == "list":
            found += await redis.lrange(key, 0, -1)
        elif kind == "stream":
            for _, fields in await redis.xrange(key):
                found += [part for pair in fields.items() for part in pair]
    return found


async def test_forget_me_leaves_nothing_of_the_person(fast, store, engine):
    slow = fast.model_copy(update={"cooldown_seconds": 30})
    async with running_bot(slow, store, engine) as bot:
        guild = dpytest.get_config().guilds[0]
        channel = dpytest.get_config().channels[0]
        alice, bob, mod = member("alice"), member("bob"), member("mod")
        await dpytest.add_role(mod, make_role(guild, fast.moderator_role))
        await dpytest.add_role(bob, make_role(guild, "Helpers", manage_messages=True))
        await dpytest.add_role(bob, make_role(guild, "Bot Admin"))
        bob_hash = store.user_hash(bob.id)

        await dpytest.message("my phone is 555-0100", member=bob)  # not for the bot
        await dpytest.message(f"<@{bot.user.id}> can you call him?", member=alice)
        [alices] = await sent_messages()
        await dpytest.message(f"<@{bot.user.id}> hello, bob here", member=bob)
        [bobs] = await sent_messages()
        await dpytest.add_reaction(bob, alices, THUMBS_UP)
        await dpytest.add_reaction(mod, alices, THUMBS_DOWN)
        exchange = await store.exchanges.for_message(alices.id)
        await bot.actions.teach(guild.id, exchange.id, bob.id, "I cannot make calls.")
        await slash_as(bot, bob, channel, "style", "set", prefix="Be kind:")
        await slash_as(bot, bob, channel, "train", "now")
        assert any("555-0100" in t.text and t.author_hash == bob_hash for t in exchange.context)
        assert any(bob_hash.encode() in value for value in await everything_under(store))

        done = await slash_as(bot, bob, channel, "forget", "me")

        assert done["ephemeral"] and done["content"].startswith(
            "Done: deleted 1 exchange of yours (messages, replies and their ratings); 1 message "
            "of yours quoted in other people's conversations with the bot; 1 rating and 1 "
            "correction you gave as a moderator; your name on 1 style you set.")
        everything = await everything_under(store)
        assert not [v for v in everything if bob_hash[:16].encode() in v or b"555-0100" in v]
        assert str(bob.id).encode() not in b"".join(everything)
        # Alice's exchange stays, with the moderator's rating; the counters follow.
        assert await store.exchanges.for_message(bobs.id) is None
        kept = await store.exchanges.for_message(alices.id)
        assert kept.user_hash == store.user_hash(alice.id) and kept.user_message == (
            "can you call him?")
        assert await store.exchanges.ratings(kept.id) == {store.user_hash(mod.id): -1}
        total = (await store.tenant(guild.id).exchanges.stats())["total"]
        assert (total["exchanges"], total["rated"], total["positive"],
                total["corrections"]) == (1, 1, 0, 0)
        assert (await store.styles.get("channel", channel.id)).prefix == "Be kind:"
        assert (await store.tenant(guild.id).trainer.take_request())["by"] == "forgotten"
        # Nothing of the person is left to forget a second time.
        again = await slash_as(bot, bob, channel, "forget", "me")
        assert again["content"].startswith("Done: deleted 0 exchanges of yours")


async def test_forget_me_is_deferred_and_reaches_direct_messages(bot, store):
    alice = member("alice")
    reply = await dm_reply("alice")
    assert await store.exchanges.for_message(reply.id) is not None

    done = await slash_as(bot, alice, dpytest.get_config().channels[0], "forget", "me")

    first_call = done["calls"][0][2]
    assert first_call["type"] == 5 and first_call["data"]["flags"] & 64  # ephemeral thinking
    assert done["content"].startswith("Done: deleted 1 exchange of yours")
    assert await store.exchanges.for_message(reply.id) is None
