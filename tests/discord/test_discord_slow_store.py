"""Every interaction answers within Discord's 3-second window however slow the store is: the
slash commands and menus defer before they touch it, the teach form defers its submit, and the
teach menu (whose form cannot be deferred) bounds its lookup and asks to try again.

The fake Discord refuses a first answer after 3 s (10062 Unknown interaction, as Discord does);
`slow_store` makes the store take 3.5 s, as an exhausted pool does under load.
"""

from __future__ import annotations

import asyncio

import discord.ext.test as dpytest
from discord.ext.test import factories
from discord_fake import slow_store
from discord_helpers import (
    RecordingAdapter,
    interaction_payload,
    invoke,
    member,
    message_menu_data,
    modal_submit,
    sent_messages,
    slash_data,
)
from store_util import corrections

from bot.frontends.discord.app import APOLOGY, STORE_APOLOGY

STORE_DELAY_S = 3.5

ADMIN_COMMANDS = [
    (("style", "set"), {"prefix": "Answer briefly:"}), (("style", "show"), {}),
    (("style", "clear"), {}), (("adapter", "status"), {}), (("adapter", "rollback"), {}),
    (("train", "now"), {}), (("chat", "on"), {}), (("chat", "off"), {}),
    (("modlog", "here"), {}), (("modlog", "off"), {}), (("review", "list"), {}),
    (("review", "approve"), {"item": "nosuchid"}), (("review", "reject"), {"item": "nosuchid"}),
]


def with_member(data: dict, target) -> dict:
    """`/moderators ...` data with its member option resolved, as Discord sends it."""
    data["options"][0]["options"] = [{"type": 6, "name": "member", "value": str(target.id)}]
    data["resolved"] = {
        "users": {str(target.id): factories.dict_from_user(target._user)},
        "members": {str(target.id): {"roles": [], "joined_at": None, "deaf": False,
                                     "mute": False, "flags": 0, "nick": target.nick}}}
    return data


def every_interaction(bot, channel, reply) -> dict[str, tuple]:
    """Each slash command and menu as (who, data), by a readable name (bob forgets himself:
    alice asked the question the teach form corrects)."""
    found = {"/" + " ".join(names): ("admin", slash_data(*names, **options))
             for names, options in ADMIN_COMMANDS}
    found["/stats"] = ("mod", slash_data("stats"))
    found["/forget me"] = ("bob", slash_data("forget", "me"))
    for sub in ("distrust", "trust"):
        found[f"/moderators {sub}"] = ("admin", with_member(slash_data("moderators", sub),
                                                            member("mod")))
    for menu in ("Add to exam", "Remove from exam"):
        found[menu] = ("admin", message_menu_data(menu, reply))
    return {name: interaction_payload(bot, member(who), channel, data)
            for name, (who, data) in found.items()}


async def answered(bot, payload: dict) -> RecordingAdapter:
    recorder = RecordingAdapter()
    await invoke(bot, payload, recorder, timeout=60)
    return recorder


async def bot_reply(bot):
    bot.runtime.generator.script(["We open at nine."])
    await dpytest.message(f"<@{bot.user.id}> when do you open?", member=member("alice"))
    [reply] = await sent_messages()
    return reply


async def test_every_command_and_the_teach_form_answer_in_time_with_a_slow_store(
        scripted_bot, store, channel):
    bot = scripted_bot
    reply = await bot_reply(bot)
    exchange = await store.exchanges.for_message(reply.id)
    opener = RecordingAdapter()
    await invoke(bot, interaction_payload(bot, member("mod"), channel, message_menu_data(
        "Teach a better reply", reply)), opener)
    [modal] = opener.modals()
    payloads = every_interaction(bot, channel, reply)
    payloads["teach form"] = interaction_payload(
        bot, member("mod"), channel, modal_submit(modal, "We open at nine, close at five."),
        kind=5)

    with slow_store(store, STORE_DELAY_S):
        recorders = await asyncio.gather(*(answered(bot, p) for p in payloads.values()))

    for name, recorder in zip(payloads, recorders, strict=True):
        assert recorder.refused == [], name
        answers = [a["content"] for a in recorder.answers()]
        assert answers and all(a["ephemeral"] for a in recorder.answers()), name
        assert not {APOLOGY, STORE_APOLOGY} & set(answers), (name, answers)
    assert [c.text for c in await corrections(store, exchange.id)] == [
        "We open at nine, close at five."]
    taught = recorders[list(payloads).index("teach form")].answers()
    assert "not stored" not in taught[-1]["content"]


async def test_the_teach_menu_asks_to_try_again_when_the_lookup_is_slow(scripted_bot, store,
                                                                        channel):
    bot = scripted_bot
    reply = await bot_reply(bot)
    recorder = RecordingAdapter()
    payload = interaction_payload(bot, member("mod"), channel,
                                  message_menu_data("Teach a better reply", reply))

    with slow_store(store, STORE_DELAY_S):
        await invoke(bot, payload, recorder, timeout=30)

    assert recorder.refused == [] and recorder.modals() == []
    [answer] = recorder.answers()
    assert answer["ephemeral"] and "please try again" in answer["content"]
    # Once the store is quick again the form opens.
    again = RecordingAdapter()
    await invoke(bot, interaction_payload(bot, member("mod"), channel,
                                          message_menu_data("Teach a better reply", reply)),
                 again)
    assert len(again.modals()) == 1
