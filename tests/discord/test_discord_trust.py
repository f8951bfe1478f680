"""Moderator trust through the real command tree: /review, /moderators, the exam menus, and
the mod log's post of a training cycle that refused its candidate."""

from __future__ import annotations

import asyncio
import time

import discord.ext.test as dpytest
from discord.ext.test import factories
from discord_helpers import (
    REFUSED_ADMIN,
    RecordingAdapter,
    interaction_payload,
    invoke,
    member,
    message_menu_data,
    sent_messages,
    slash,
    slash_data,
)

from bot.core.store import HeldItem
from trainer.cycle import endorsed_view
from trainer.exam import exam_references
from trainer.summary import exam_answers, headline, held_items

JUNK = "Buy cheap pills at example.com today!"



async def bot_reply(bot, store, text: str):
    """Alice asks the bot `text`; its reply message and stored exchange."""
    await dpytest.message(f"<@{bot.user.id}> {text}", member=member("alice"))
    [reply] = await sent_messages()
    return reply, await store.exchanges.for_message(reply.id)


async def menu(bot, who: str, name: str, message) -> dict:
    recorder = RecordingAdapter()
    payload = interaction_payload(bot, member(who), message.channel,
                                  message_menu_data(name, message))
    await invoke(bot, payload, recorder)
    return recorder.answers()[-1]


async def on_member(bot, who: str, sub: str, target: str) -> dict:
    """`/moderators sub member:target` as `who`, with the member resolved as Discord sends it."""
    channel, moderator = dpytest.get_config().channels[0], member(target)
    data = slash_data("moderators", sub)
    data["options"][0]["options"] = [{"type": 6, "name": "member", "value": str(moderator.id)}]
    data["resolved"] = {
        "users": {str(moderator.id): factories.dict_from_user(moderator._user)},
        "members": {str(moderator.id): {"roles": [], "joined_at": None, "deaf": False,
                                        "mute": False, "flags": 0, "nick": moderator.nick}}}
    recorder = RecordingAdapter()
    await invoke(bot, interaction_payload(bot, member(who), channel, data), recorder)
    return recorder.answers()[-1]


async def test_review_list_approve_and_reject_by_admins_only(bot, store, own):
    _, first = await bot_reply(bot, store, "what are your hours?")
    _, second = await bot_reply(bot, store, "where are you?")
    spam, odd = (HeldItem(exchange_id=first.id, moderator_hash="h", moderator_name="Rogue",
                          kind="teach", text=JUNK, reason="a link"),
                 HeldItem(exchange_id=second.id, moderator_hash="h", moderator_name="Rogue",
                          kind="teach", text="odd answer", reason="repeated on 3 prompts"))
    assert await own.trust.hold([spam, odd]) == 2

    assert (await slash(bot, "mod", "review", "list"))["content"] == REFUSED_ADMIN
    listed = await slash(bot, "admin", "review", "list")
    assert listed["ephemeral"] and listed["content"].startswith("Held for review (2)")
    assert f"`{spam.id}` Rogue taught “{JUNK}” on “what are your hours?” - held: a link" \
        in listed["content"]

    approved = await slash(bot, "admin", "review", "approve", item=spam.id[:6])
    assert approved["content"] == f"Approved “{JUNK}” by Rogue: it trains from the next cycle."
    assert (await own.trust.item(spam.id)).status == "approved"
    again = await slash(bot, "admin", "review", "reject", item=spam.id)
    assert again["content"] == f"Nothing changed: held item {spam.id} was approved already."
    unknown = await slash(bot, "admin", "review", "reject", item="nosuchid")
    assert unknown["content"].startswith("Nothing changed: no held item `nosuchid`")

    rejected = await slash(bot, "admin", "review", "reject", item=odd.id)
    assert rejected["content"] == "Rejected “odd answer” by Rogue: it never trains."
    assert await own.trust.pending() == []
    assert (await slash(bot, "admin", "review", "list"))["content"] == \
        "Nothing is waiting for review in this server."


async def test_distrust_and_trust_a_moderator(bot, store, own, fast):
    _, exchange = await bot_reply(bot, store, "what are your hours?")
    await own.exchanges.correct(exchange.id, member("mod").id, "Nine to five.")

    assert (await on_member(bot, "mod", "distrust", "bob"))["content"] == REFUSED_ADMIN
    done = await on_member(bot, "admin", "distrust", "mod")
    assert done["ephemeral"] and done["content"].startswith(
        f"Distrusted {member('mod').display_name}: their ratings and teachings leave "
        "training and the exam from the next cycle")
    assert await own.trust.distrusted() == {store.user_hash(member("mod").id)}
    verdict, _ = await endorsed_view(fast, own)
    assert [c for item in verdict.rated for c in item.corrections] == []

    assert "is distrusted already" in (await on_member(bot, "admin", "distrust", "mod"))[
        "content"]
    trusted = await on_member(bot, "admin", "trust", "mod")
    assert trusted["content"].startswith(f"Trusted {member('mod').display_name} again")
    verdict, _ = await endorsed_view(fast, own)
    assert [c.text for item in verdict.rated for c in item.corrections] == ["Nine to five."]


async def test_add_to_exam_pins_a_reply_of_this_server_first_on_the_exam(bot, store, own, fast):
    reply, exchange = await bot_reply(bot, store, "what are your hours?")
    question = await dpytest.message("just a message", member=member("alice"))

    assert (await menu(bot, "mod", "Add to exam", reply))["content"] == REFUSED_ADMIN
    assert "not one of my replies" in (await menu(bot, "admin", "Add to exam",
                                                  question))["content"]
    added = await menu(bot, "admin", "Add to exam", reply)
    assert added["ephemeral"] and added["content"].startswith(
        "Added to this server's exam (1 pinned reply)")
    assert await own.trust.exam_pins() == [exchange.id]
    _, exam = await endorsed_view(fast, own)
    [first, *_] = exam_references([], set(), list(exam.pinned), limit=5)
    assert (first.exchange_id, first.text, first.source) == (exchange.id, exchange.reply,
                                                             "pinned")
    assert "on the exam already" in (await menu(bot, "admin", "Add to exam", reply))["content"]

    removed = await menu(bot, "admin", "Remove from exam", reply)
    assert removed["content"].startswith("Removed from this server's exam")
    assert await own.trust.exam_pins() == []


def refused_run() -> dict:
    samples = [{"prompt": "What are your hours?", "reference": "Nine to six.",
                "base": "babble", "active": "We open at nine.", "candidate": "pills pills"}]
    held = [HeldItem(exchange_id="x", moderator_hash="h", moderator_name="Rogue", kind="teach",
                     text=JUNK, reason="a link")]
    return {"outcome": "rejected", "reason": "degeneracy: 90% share a long n-gram",
            "at": time.time(),
            "learned": {"headline": headline("rejected", "", "base",
                                             "degeneracy: 90% share a long n-gram",
                                             "degeneracy"),
                        "taught": [{"text": "Nine to six.", "count": 2, "moderators": ["Ann"]}],
                        "held": held_items(held, newly=1),
                        "exam": exam_answers(samples, "v1")}}


async def test_a_refused_cycle_is_posted_to_the_modlog_and_shown_by_adapter_status(bot, own):
    modlog = dpytest.get_config().channels[0]
    await own.set_modlog_channel(modlog.id)
    bot.runtime.on_change(bot.modlog.announce)
    run = refused_run()
    await own.trainer.record_run(run)

    await own.registry.announce_cycle(run)  # as trainer/cycle.py does after recording it

    async with asyncio.timeout(10):
        while not bot.sent_payloads:
            await asyncio.sleep(0.05)
    [post] = await sent_messages()
    assert post.channel.id == modlog.id
    lines = post.content.splitlines()
    assert lines[0] == "Training cycle: base keeps serving"
    assert lines[1].startswith("Refused by the degeneracy check, base keeps serving")
    assert any(line.startswith("Held for review: 1 (1 new)") and "Rogue" in line
               for line in lines)
    assert "Exam “What are your hours?”: before [v1] “We open at nine.” → after " \
        "“pills pills”" in lines

    status = await slash(bot, "admin", "adapter", "status")
    assert "Refused by the degeneracy check" in status["content"]
    assert "“Nine to six.” ×2 (Ann)" in status["content"]
    assert "after “pills pills”" in status["content"] and len(status["content"]) <= 2000
