"""The canary on a real Redis: starting one only where its parent still serves, ending it once,
the live tally (trusted moderators only), the router's sticky per-conversation choice, the
judge in the trainer (two trainers decide once), and publishing as a canary."""

from __future__ import annotations

import asyncio

import pytest
from store_util import TENANT

from bot.core.generation import BASE_VERSION
from bot.core.store import ActiveChanged, AdapterRecord, Exchange
from bot.core.store.canary import Canary
from bot.service.follow import AdapterRouter, serves_canary
from trainer.canary import judge, judge_canaries
from trainer.publish import publish

HOUR = 3600.0


async def saved(own, settings, blob: bytes) -> str:
    return (await own.registry.save(AdapterRecord(base_model=settings.model_name), blob)).version


async def served(own, version: str, votes: dict[str, int], at: float | None = None) -> Exchange:
    """An exchange answered by `version`, rated by each moderator in `votes`."""
    exchange = Exchange(tenant=TENANT, user_message="hi", reply="hello",
                        adapter_version=version)
    if at is not None:
        exchange = exchange.model_copy(update={"created_at": at})
    exchange = await own.exchanges.add(exchange)
    for moderator, value in votes.items():
        await own.exchanges.rate(exchange.id, moderator, value)
    return exchange


async def events_of(store, kinds=("canary",)):
    """A subscription to adapter events; returns (list they land in, its task)."""
    seen, ready = [], asyncio.Event()

    async def listen():
        async for event in store.registry.events(subscribed=ready):
            if event.kind in kinds:
                seen.append(event)
    task = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 5)
    return seen, task


async def test_a_canary_starts_only_where_its_parent_still_serves(store, own, settings, blobs):
    v1, v2 = await saved(own, settings, blobs["v1"]), await saved(own, settings, blobs["v2"])
    await own.registry.activate(v1)
    with pytest.raises(ActiveChanged):
        await own.canary.start(Canary(version=v2, active=BASE_VERSION, share=0.2))
    assert await own.canary.current() is None

    seen, task = await events_of(store)
    assert await own.canary.start(Canary(version=v2, active=v1, share=0.2)) is None
    assert (await own.canary.current()).version == v2
    assert await own.registry.active() == v1  # the canary is not active
    canary = await own.canary.current()
    assert await own.canary.end(canary, "aborted", "by an admin")
    assert not await own.canary.end(canary, "rolled back", "late")  # ended once
    assert await own.canary.current() is None
    await asyncio.sleep(0.2)
    task.cancel()
    assert [(e.reason, e.version, e.previous) for e in seen] == [("started", v2, v1),
                                                                  ("aborted", v2, v1)]


async def test_promoting_ends_it_and_activates_it_once(own, settings, blobs):
    v1, v2 = await saved(own, settings, blobs["v1"]), await saved(own, settings, blobs["v2"])
    await own.registry.activate(v1)
    await own.canary.start(Canary(version=v2, active=v1, share=0.5))
    canary = await own.canary.current()
    assert await own.canary.promote(canary, "numbers")
    assert not await own.canary.promote(canary, "numbers")
    assert await own.registry.active() == v2
    assert (await own.registry.history())[0] == v1


async def test_a_canary_whose_active_version_left_is_aborted_not_promoted(own, settings,
                                                                         blobs):
    v1, v2 = await saved(own, settings, blobs["v1"]), await saved(own, settings, blobs["v2"])
    v3 = await saved(own, settings, blobs["v1"])
    await own.registry.activate(v1)
    await own.canary.start(Canary(version=v2, active=v1, share=0.5))
    await own.registry.activate(v3)  # e.g. `python -m trainer publish` meanwhile
    assert not await own.canary.promote(await own.canary.current(), "numbers")
    assert await own.canary.current() is None
    assert await own.registry.active() == v3


async def test_the_tally_counts_trusted_moderators_since_the_start(store, own, settings, blobs):
    v1, v2 = await saved(own, settings, blobs["v1"]), await saved(own, settings, blobs["v2"])
    await own.registry.activate(v1)
    await served(own, v2, {"mod-a": 1}, at=1.0)  # before the canary: not counted
    await own.canary.start(Canary(version=v2, active=v1, share=0.5))
    canary = await own.canary.current()
    await served(own, v2, {"mod-a": 1})
    await served(own, v2, {"mod-a": -1, "mod-b": -1})
    await served(own, v2, {"mod-a": 1, "mod-b": -1})  # a tie: not counted
    await served(own, v2, {"liar": 1})  # distrusted below
    await served(own, v1, {"mod-a": 1})
    await served(own, v1, {"liar": -1, "mod-b": 1})  # the trusted 👍 wins
    await own.trust.distrust("liar")

    mine, rest = await own.canary.tally(canary, await own.trust.distrusted())
    assert (mine.up, mine.down) == (1, 1)
    assert (rest.up, rest.down) == (2, 0)
    await own.trust.trust("liar")
    mine, _ = await own.canary.tally(canary, await own.trust.distrusted())
    assert (mine.up, mine.down) == (2, 1)


async def test_the_router_keeps_each_conversation_on_one_version(store, own, settings, blobs,
                                                               engine):
    v1, v2 = await saved(own, settings, blobs["v1"]), await saved(own, settings, blobs["v2"])
    await own.registry.activate(v1)
    router = AdapterRouter(store, engine, home_tenant=TENANT)
    await router.start_up()
    assert router.canary(TENANT) is None
    await own.canary.start(Canary(version=v2, active=v1, share=0.5))
    await router.refresh_canary(TENANT)

    ids = [f"conversation-{i}" for i in range(200)]
    first = [router.version_for(TENANT, c) for c in ids]
    assert [router.version_for(TENANT, c) for c in ids] == first  # sticky
    assert 60 <= first.count(v2) <= 140 and set(first) == {v1, v2}
    assert first == [v2 if serves_canary(c, v2, 0.5) else v1 for c in ids]
    assert router.version_for(TENANT) == v1  # no conversation: the active adapter
    assert router.version_for(TENANT + 1, ids[0]) == v1  # another server: the default

    await own.canary.end(await own.canary.current(), "aborted", "")
    await router.refresh_canary(TENANT)
    assert {router.version_for(TENANT, c) for c in ids} == {v1}


def test_a_canary_draws_its_own_share_of_conversations():
    ids = [str(i) for i in range(2000)]
    a = {c for c in ids if serves_canary(c, "v5", 0.2)}
    b = {c for c in ids if serves_canary(c, "v6", 0.2)}
    assert 300 <= len(a) <= 500 and 300 <= len(b) <= 500
    assert a != b
    assert not {c for c in ids if serves_canary(c, "v5", 0.0)}


async def test_the_judge_rolls_back_a_worse_canary_and_two_trainers_decide_once(
        store, own, settings, blobs):
    v1, v2 = await saved(own, settings, blobs["v1"]), await saved(own, settings, blobs["v2"])
    await own.registry.activate(v1)
    await own.canary.start(Canary(version=v2, active=v1, share=0.5))
    for _ in range(settings.canary_min_ratings):
        await served(own, v2, {"mod-a": -1})
        await served(own, v1, {"mod-a": 1})
    seen, task = await events_of(store)

    verdicts = await asyncio.gather(judge(settings, own), judge(settings, own))
    await asyncio.sleep(0.2)
    task.cancel()
    assert [v.action for v in verdicts if v is not None] == ["rollback"]
    assert [e.reason for e in seen] == ["rolled back"]
    assert "canary 0/20 👍" in seen[0].detail
    assert await own.canary.current() is None
    assert await own.registry.active() == v1


async def test_the_judge_promotes_a_better_canary_and_waits_while_undecided(
        store, own, settings, blobs):
    v1, v2 = await saved(own, settings, blobs["v1"]), await saved(own, settings, blobs["v2"])
    await own.registry.activate(v1)
    await own.canary.start(Canary(version=v2, active=v1, share=0.5))
    await served(own, v2, {"mod-a": 1})
    assert (await judge_canaries(settings, store))[TENANT].action == "wait"
    for _ in range(settings.canary_min_ratings):
        await served(own, v2, {"mod-a": 1})
        await served(own, v1, {"mod-a": -1})
    assert (await judge_canaries(settings, store))[TENANT].action == "promote"
    assert await own.registry.active() == v2
    assert await own.canary.current() is None
    assert await judge_canaries(settings, store) == {}


async def test_at_the_time_limit_too_few_ratings_promote_on_the_gates_verdict(
        store, own, settings, blobs):
    v1, v2 = await saved(own, settings, blobs["v1"]), await saved(own, settings, blobs["v2"])
    await own.registry.activate(v1)
    await own.canary.start(Canary(version=v2, active=v1, share=0.5))
    started = (await own.canary.current()).started_at
    later = started + settings.canary_max_hours * HOUR
    assert (await judge(settings, own, now=later - HOUR)).action == "wait"
    verdict = await judge(settings, own, now=later)
    assert verdict.action == "promote" and "offline gate's verdict stands" in verdict.reason
    assert await own.registry.active() == v2


async def test_a_lock_held_by_a_training_cycle_leaves_the_canary_alone(own, settings, blobs):
    v1, v2 = await saved(own, settings, blobs["v1"]), await saved(own, settings, blobs["v2"])
    await own.registry.activate(v1)
    await own.canary.start(Canary(version=v2, active=v1, share=0.5))
    assert await own.trainer.acquire_lock("a-cycle", 60)
    later = (await own.canary.current()).started_at + settings.canary_max_hours * HOUR
    assert await judge(settings, own, now=later) is None
    assert (await own.canary.current()).version == v2


async def test_publishing_with_a_share_starts_a_canary(own, settings, blobs):
    v1 = await saved(own, settings, blobs["v1"])
    await own.registry.activate(v1)
    record = AdapterRecord(parent=v1, base_model=settings.model_name)
    new = await publish(own.registry, record, blobs["v2"], {"reason": "better chrF"}, None,
                        canaries=own.canary, share=0.2)
    canary = await own.canary.current()
    assert (canary.version, canary.active, canary.share, canary.gate) == (
        new.version, v1, 0.2, "better chrF")
    assert await own.registry.active() == v1
    # CANARY_SHARE=0: promoted at once, as before
    newer = await publish(own.registry, record.model_copy(update={"parent": v1}), blobs["v1"],
                          {}, None, canaries=own.canary, share=0.0)
    assert await own.registry.active() == newer.version
