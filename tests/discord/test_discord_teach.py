"""The teach form: it shows the reply it corrects, expires (and says so), and a form submitted
after it expired is answered with the moderator's text instead of a bare failure."""

from __future__ import annotations

import asyncio
import sys

import discord.ext.test as dpytest
from discord_helpers import (
    RecordingAdapter,
    interaction_payload,
    invoke,
    member,
    message_menu_data,
    modal_submit,
    sent_messages,
)
from store_util import corrections


def live_ratings_module():
    """The module the bot's extension loader made (it loads a fresh copy per bot)."""
    return sys.modules["bot.frontends.discord.cogs.ratings"]


def fixed_reply(scripted_bot, text: str) -> None:
    scripted_bot.runtime.generator.script([text])


async def open_teach_form(bot, channel, reply) -> tuple[dict, RecordingAdapter]:
    recorder = RecordingAdapter()
    menu = message_menu_data("Teach a better reply", reply)
    await invoke(bot, interaction_payload(bot, member("mod"), channel, menu), recorder)
    [modal] = recorder.modals()
    return modal, recorder


async def test_the_form_shows_the_reply_it_corrects(scripted_bot, store, channel):
    bot = scripted_bot
    fixed_reply(bot, "We never close.\nCome any time.")
    await dpytest.message(f"<@{bot.user.id}> what are your hours?", member=member("alice"))
    [reply] = await sent_messages()

    modal, _ = await open_teach_form(bot, channel, reply)

    shown, field = modal["components"]
    assert shown == {"type": 10, "content": "**The reply you correct:**\n> We never close.\n"
                                            "> Come any time."}
    assert field["type"] == 18 and field["label"] == "The reply the bot should have given"
    assert field["component"]["type"] == 4 and field["component"]["max_length"] == 1500


async def test_an_expired_form_says_so_and_a_late_submit_keeps_the_text(bot, store, channel,
                                                                        monkeypatch):
    ratings = live_ratings_module()
    monkeypatch.setattr(ratings, "TEACH_TIMEOUT_S", 0.05)
    await dpytest.message(f"<@{bot.user.id}> what are your hours?", member=member("alice"))
    [reply] = await sent_messages()
    exchange = await store.exchanges.for_message(reply.id)

    modal, recorder = await open_teach_form(bot, channel, reply)
    async with asyncio.timeout(10):  # the form's own timeout ends it; then it says so
        while not any("has expired, so nothing was stored" in a["content"]
                      for a in recorder.answers()):
            await asyncio.sleep(0.02)
    [expired] = [a for a in recorder.answers() if "has expired" in a["content"]]
    assert expired["ephemeral"]

    late = RecordingAdapter()
    submit = modal_submit(modal, "We are open nine to five.")
    await invoke(bot, interaction_payload(bot, member("mod"), channel, submit, kind=5), late)

    [answer] = late.answers()
    assert answer["ephemeral"] and answer["content"].startswith(ratings.TEACH_LATE)
    assert answer["content"].endswith("> We are open nine to five.")
    assert await corrections(store, exchange.id) == []
