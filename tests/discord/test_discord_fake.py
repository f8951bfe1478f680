"""The fake Discord of tests/discord_helpers.py refuses what Discord refuses, so a test that
passes there does not rely on something Discord would turn down."""

from __future__ import annotations

import discord
import discord.ext.test as dpytest
import pytest
from discord.ext.test import backend
from discord_helpers import (
    FakeClock,
    RecordingAdapter,
    delete_messages,
    interaction_payload,
    invoke,
    member,
    message_menu_data,
)


async def test_the_fake_refuses_a_reply_to_a_deleted_message_as_discord_does(bot, channel):
    asked = await dpytest.message("a question", member=member("alice"))
    await delete_messages(asked)

    with pytest.raises(discord.HTTPException) as refused:
        await asked.reply("too late")
    assert refused.value.status == 400 and "Unknown message" in refused.value.text
    # ... unless the reference allows it to be gone.
    await asked.channel.send("still here",
                             reference=asked.to_reference(fail_if_not_exists=False))


async def test_the_fake_refuses_messages_over_2000_characters_as_discord_does(bot, channel):
    sent = await channel.send("short")
    for attempt in (lambda: channel.send("x" * 2001), lambda: sent.edit(content="y" * 2001)):
        with pytest.raises(discord.HTTPException) as refused:
            await attempt()
        assert refused.value.status == 400 and "2000 or fewer" in refused.value.text
    edited = await sent.edit(content="z" * 2000)
    assert edited.content == "z" * 2000
    assert [what for what, _, _ in bot.refusals] == ["send", "edit"]


async def test_an_interaction_answered_after_3_seconds_is_refused(bot, channel, monkeypatch):
    clock = FakeClock()
    recorder = RecordingAdapter(clock=clock)
    lookup = bot.actions.exchange_of_message

    async def slow(*args, **kwargs):  # quick for the bot's own timeout, 3.5 s for Discord's
        clock.advance(3.5)
        return await lookup(*args, **kwargs)

    monkeypatch.setattr(bot.actions, "exchange_of_message", slow)
    # The teach menu answers with a form, which cannot be deferred.
    asked = await dpytest.message("a question", member=member("alice"))
    payload = interaction_payload(bot, member("mod"), channel,
                                  message_menu_data("Teach a better reply", asked))

    await invoke(bot, payload, recorder)

    assert recorder.calls == []  # neither the answer nor the apology got through
    assert [text for _, _, text in recorder.refused] == ["Unknown interaction"] * 2


async def test_an_edit_reaches_the_client_as_discord_sends_it_and_is_counted(bot, channel):
    sent = await channel.send("first words")
    edited = await sent.edit(content="first words and more")

    # MESSAGE_UPDATE came back: the client's cached message shows the edit, as with Discord.
    cached = bot._connection._get_message(sent.id)
    assert cached.content == edited.content == "first words and more"
    assert cached.type == edited.type == discord.MessageType.default  # still no system message
    # Discord's copy keeps where the message is (a message menu on it still resolves).
    [raw] = [m for m in backend._cur_config.messages[channel.id] if m["id"] == sent.id]
    assert int(raw["channel_id"]) == channel.id and raw["content"] == "first words and more"
    assert bot.edits == [(sent.id, "first words and more")]
    assert bot.writes == [("send", sent.id, "first words"),
                          ("edit", sent.id, "first words and more")]


async def test_the_fake_refuses_an_edit_of_a_deleted_message_as_discord_does(bot, channel):
    sent = await channel.send("soon gone")
    await delete_messages(sent)

    with pytest.raises(discord.NotFound) as refused:
        await sent.edit(content="too late")
    assert refused.value.code == 10008 and bot.edits == []
