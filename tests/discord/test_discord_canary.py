"""A canary through the real command tree: /adapter status shows it, admins /adapter promote or
/adapter abort it (others are refused), a rollback during it ends it, and each reply in a chain
keeps the version that answered its conversation."""

from __future__ import annotations

import asyncio

import discord.ext.test as dpytest
from adapters_util import make_adapter_bytes
from discord_helpers import REFUSED_ADMIN, member, reply_message, sent_messages, slash

from bot.core.store import AdapterRecord, Exchange
from bot.core.store.canary import Canary
from bot.frontends.discord.modlog import modlog_text
from bot.service.follow import serves_canary
from trainer.canary import judge


async def with_canary(own, fast, tiny_model_dir, share: float = 0.5) -> tuple[str, str]:
    """v1 active, v2 its canary; returns (active, canary)."""
    versions = []
    for seed in (1, 2):
        record = await own.registry.save(AdapterRecord(base_model=str(tiny_model_dir)),
                                         make_adapter_bytes(tiny_model_dir, fast, seed=seed))
        versions.append(record.version)
    await own.registry.activate(versions[0])
    await own.canary.start(Canary(version=versions[1], active=versions[0], share=share,
                                  gate="better chrF"))
    return versions[0], versions[1]


async def test_status_shows_the_canary_and_admins_promote_it(bot, own, fast, tiny_model_dir):
    active, canary = await with_canary(own, fast, tiny_model_dir)
    router = bot.runtime.router
    await router.refresh_canary(own.tenant)

    status = (await slash(bot, "admin", "adapter", "status"))["content"]
    assert f"Canary: {canary} answers 50% of new conversations, {active} the rest" in status
    assert "Live test (wait now): undecided: canary no ratings, active no ratings" in status
    assert (await slash(bot, "alice", "adapter", "promote"))["content"] == REFUSED_ADMIN
    assert (await own.canary.current()).version == canary

    promoted = await slash(bot, "admin", "adapter", "promote")
    assert promoted["content"].startswith(f"Promoted canary {canary}: it now answers every "
                                          "conversation")
    assert promoted["calls"][0][2]["type"] == 5  # deferred first
    assert await own.registry.active() == canary
    assert router.version_for(own.tenant, "any conversation") == canary
    again = await slash(bot, "admin", "adapter", "promote")
    assert again["content"] == "Nothing changed: this server has no canary running."


async def test_abort_and_rollback_end_the_canary(bot, own, fast, tiny_model_dir):
    active, canary = await with_canary(own, fast, tiny_model_dir)
    assert (await slash(bot, "alice", "adapter", "abort"))["content"] == REFUSED_ADMIN
    aborted = await slash(bot, "admin", "adapter", "abort")
    assert aborted["content"].startswith(f"Ended canary {canary} (aborted): {active} answers "
                                         "every conversation again")
    assert await own.canary.current() is None and await own.registry.active() == active

    await own.canary.start(Canary(version=canary, active=active, share=0.5))
    rolled = await slash(bot, "admin", "adapter", "rollback")
    assert rolled["content"].startswith(f"Ended canary {canary} (rolled back)")
    assert await own.canary.current() is None
    assert await own.registry.active() == active  # the canary went, not the active one
    assert bot.runtime.router.canary(own.tenant) is None


async def test_a_reply_chain_keeps_its_version(bot, own, fast, tiny_model_dir, channel):
    active, canary = await with_canary(own, fast, tiny_model_dir)
    # Served here before the first question (else it races the follower's activation).
    await bot.runtime.router.refresh(own.tenant)
    await bot.runtime.router.refresh_canary(own.tenant)
    alice = member("alice")
    for n in range(4):  # a question, a reply to the answer, a reply to that answer
        question = await dpytest.message(f"<@{bot.user.id}> question {n}", member=alice)
        [answer] = await sent_messages()
        chain = [answer]
        for follow_up in ("and then?", "why?"):
            reply_message(follow_up, alice, channel, replied_to=chain[-1])
            chain += await sent_messages()
        versions = [(await own.exchanges.for_message(m.id)).adapter_version for m in chain]
        expected = canary if serves_canary(str(question.id), canary, 0.5) else active
        assert versions == [expected] * 3, n


def test_the_mod_log_says_how_a_canary_started_and_ended():
    from bot.core.store import AdapterEvent

    start = AdapterEvent(kind="canary", tenant=1, version="v2", previous="v1",
                         reason="started", detail="it answers 20% of new conversations")
    end = start.model_copy(update={"reason": "rolled back", "detail": "canary 0/20 👍 (0%)"})
    assert modlog_text(start, None) == ("Canary v2 started against v1: it answers 20% of new "
                                        "conversations")
    assert modlog_text(end, None) == ("Canary v2 rolled back: v1 answers every conversation "
                                      "again (canary 0/20 👍 (0%))")


async def canary_post():
    """The next mod-log post about a canary (v1's activation is posted before it)."""
    async with asyncio.timeout(20):
        while True:
            while dpytest.sent_queue.empty():
                await asyncio.sleep(0.05)
            for post in await sent_messages():
                if post.content.startswith("Canary"):
                    return post


async def test_the_mod_log_posts_the_start_and_the_judges_decision(bot, own, fast,
                                                                   tiny_model_dir, channel):
    await own.set_modlog_channel(channel.id)
    bot.runtime.on_change(bot.modlog.announce)
    active, canary = await with_canary(own, fast, tiny_model_dir)
    started = await canary_post()
    assert started.content == (f"Canary {canary} started against {active}: it answers 50% of "
                               "new conversations until moderators' live ratings decide; the "
                               "offline gate: better chrF")
    for _ in range(fast.canary_min_ratings):
        for version, vote in ((canary, -1), (active, 1)):
            exchange = await own.exchanges.add(Exchange(tenant=own.tenant, user_message="q",
                                                        reply="a", adapter_version=version))
            await own.exchanges.rate(exchange.id, "mod", vote)
    assert (await judge(fast, own)).action == "rollback"
    ended = await canary_post()
    assert ended.content.startswith(f"Canary {canary} rolled back: {active} answers every "
                                    "conversation again (worse than the active adapter: "
                                    "canary 0/20 👍 (0%), active 20/20 👍 (100%)")
