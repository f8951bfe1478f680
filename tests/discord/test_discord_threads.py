"""Threads and forum posts follow their parent channel: its style and `/chat on` apply in them;
a thread may have its own."""

from __future__ import annotations

import discord.ext.test as dpytest
from discord_helpers import make_forum, make_thread, member, sent_messages, slash_as


async def ask_in(bot, channel, text: str, who: str = "alice"):
    await dpytest.message(f"<@{bot.user.id}> {text}", channel=channel,
                          member=member(who, channel.guild))
    [reply] = await sent_messages()
    return reply, await bot.store.exchanges.for_message(reply.id)


async def test_a_channels_style_applies_in_its_threads(bot, store, channel):
    await store.styles.set("channel", channel.id, "Answer as a polite support agent:")
    thread = make_thread(channel, "printer trouble")

    reply, exchange = await ask_in(bot, thread, "my printer is on fire")

    assert reply.channel.id == thread.id
    assert exchange.style == "Answer as a polite support agent:"
    assert exchange.channel_id == thread.id  # stored where it was said


async def test_a_threads_own_style_wins_over_its_channels(bot, store, channel):
    thread = make_thread(channel)
    await slash_as(bot, member("admin"), channel, "style", "set", prefix="Channel voice:")
    done = await slash_as(bot, member("admin"), thread, "style", "set", prefix="Thread voice:",
                          scope="thread")
    assert done["content"].startswith("Style for this thread set")

    _, in_thread = await ask_in(bot, thread, "hello")
    _, in_channel = await ask_in(bot, channel, "hello", who="bob")
    assert (in_thread.style, in_channel.style) == ("Thread voice:", "Channel voice:")

    shown = await slash_as(bot, member("admin"), thread, "style", "show")
    assert shown["content"].splitlines() == [
        "Thread style (in force): Thread voice:",
        "Channel style (overridden here by the thread's): Channel voice:"]


async def test_style_set_in_a_thread_sets_its_channel_by_default(bot, store, channel):
    thread = make_thread(channel)

    done = await slash_as(bot, member("admin"), thread, "style", "set", prefix="Be brief:")

    assert done["content"].startswith(f"Style for <#{channel.id}> and its threads set")
    assert (await store.styles.get("channel", channel.id)).prefix == "Be brief:"
    assert await store.styles.get("channel", thread.id) is None


async def test_chat_on_in_a_forum_post_switches_the_whole_forum_on(bot, store, channel):
    forum = make_forum(channel.guild)
    first, second = make_thread(forum, "first post"), make_thread(forum, "second post")

    done = await slash_as(bot, member("admin"), first, "chat", "on")
    assert done["content"] == f"I now answer every message in <#{forum.id}> and its threads."

    await dpytest.message("no mention needed in any post", channel=second,
                          member=member("alice"))
    [reply] = await sent_messages()
    assert reply.channel.id == second.id
    exchange = await store.exchanges.for_message(reply.id)
    assert exchange.user_message == "no mention needed in any post"
    # ... and elsewhere nothing changed.
    await dpytest.message("a plain channel stays quiet", channel=channel, member=member("bob"))
    assert await sent_messages() == []


async def test_chat_on_for_one_thread_and_off_while_its_channel_is_on(bot, store, channel):
    thread, other = make_thread(channel, "one"), make_thread(channel, "two")
    on = await slash_as(bot, member("admin"), thread, "chat", "on", scope="thread")
    assert on["content"] == "I now answer every message in this thread."

    await dpytest.message("answered here", channel=thread, member=member("alice"))
    await dpytest.message("not in the other thread", channel=other, member=member("alice"))
    [reply] = await sent_messages()
    assert reply.channel.id == thread.id

    await slash_as(bot, member("admin"), channel, "chat", "on")
    off = await slash_as(bot, member("admin"), thread, "chat", "off", scope="thread")
    assert off["content"].startswith("Turned off for this thread, but ")
    assert f"<#{channel.id}> is on" in off["content"]


async def test_scope_thread_outside_a_thread_changes_nothing(bot, store, channel):
    done = await slash_as(bot, member("admin"), channel, "chat", "on", scope="thread")

    assert done["content"].startswith("Nothing changed: this is not a thread")
    assert not await store.chat.is_on(channel.id)
