"""bot/core/store/trust.py on a real Redis: distrusted moderators, the review queue and the
exam pins round-trip, stay inside their server, and leave with forgetting and wiping."""

from __future__ import annotations

import pytest
from store_util import TENANT, raw_redis

from bot.core.store import (
    Exchange,
    HeldItem,
    OtherTenant,
    StoreError,
    UnknownExchange,
    UnknownHeldItem,
)
from bot.core.store.wipe import wipe_tenant

OTHER = 2


async def taught(store, moderator, text: str, tenant: int = TENANT):
    """A stored exchange of `tenant` with `moderator`'s teaching; returns it and its held item."""
    exchange = await store.tenant(tenant).exchanges.add(
        Exchange(tenant=tenant, user_message="hi", reply="hello"))
    correction = await store.tenant(tenant).exchanges.correct(exchange.id, moderator, text)
    return exchange, HeldItem(exchange_id=exchange.id, moderator_hash=correction.moderator_hash,
                              kind="teach", text=text, reason="link")


async def test_the_review_queue_round_trips(store, own):
    _, first = await taught(store, "mod-a", "see example.com")
    _, second = await taught(store, "mod-b", "join discord.gg/x")
    _, third = await taught(store, "mod-a", "@everyone hi")
    first, second, third = (item.model_copy(update={"held_at": at})
                            for item, at in ((first, 1.0), (second, 2.0), (third, 3.0)))

    assert await own.trust.hold([second, first, third]) == 3
    assert await own.trust.hold([first, second]) == 0  # held before: left as it is
    assert [i.id for i in await own.trust.pending()] == [first.id, second.id, third.id]
    assert [i.id for i in await own.trust.pending(limit=1)] == [first.id]
    assert (await own.trust.item(second.id)) == second

    approved = await own.trust.approve(first.id)
    rejected = await own.trust.reject(second.id)

    assert approved.status == "approved" and approved.decided_at is not None
    assert rejected.status == "rejected"
    assert [i.id for i in await own.trust.pending()] == [third.id]
    state = await own.trust.state()
    assert state.decisions == {first.id: "approved", second.id: "rejected"}
    # a later cycle holding the same items again does not queue them again
    assert await own.trust.hold([first, second]) == 0
    assert [i.id for i in await own.trust.pending()] == [third.id]
    assert (await own.trust.item(first.id)).status == "approved"


async def test_bad_review_decisions_say_why(own, store):
    _, item = await taught(store, "mod", "see example.com")
    await own.trust.hold([item])
    await own.trust.reject(item.id)

    with pytest.raises(StoreError, match="rejected already"):
        await own.trust.approve(item.id)
    with pytest.raises(UnknownHeldItem, match="nothing held for review with id 'nope'"):
        await own.trust.approve("nope")
    assert await own.trust.hold([]) == 0


async def test_the_queue_is_per_server_and_drops_forgotten_exchanges(store, own):
    exchange, mine = await taught(store, "mod", "see example.com")
    _, theirs = await taught(store, "mod", "see example.org", tenant=OTHER)
    await own.trust.hold([mine])
    await store.tenant(OTHER).trust.hold([theirs])

    assert [i.id for i in await own.trust.pending()] == [mine.id]
    with pytest.raises(UnknownHeldItem):
        await own.trust.approve(theirs.id)

    await own.exchanges.forget([exchange])

    assert await own.trust.pending() == []
    with pytest.raises(UnknownHeldItem):
        await own.trust.item(mine.id)  # gone with its exchange
    assert [i.id for i in await store.tenant(OTHER).trust.pending()] == [theirs.id]


async def test_distrust_and_trust_by_user_id(store, own):
    assert await own.trust.distrust(42) is True
    assert await own.trust.distrust(42) is False
    assert await own.trust.distrusted() == frozenset({store.user_hash(42)})
    assert (await own.trust.state()).distrusted == frozenset({store.user_hash(42)})
    assert await store.tenant(OTHER).trust.distrusted() == frozenset()

    assert await own.trust.trust(42) is True and await own.trust.trust(42) is False
    assert await own.trust.distrusted() == frozenset()


async def test_rated_exchanges_name_each_moderators_vote(store, own):
    exchange = await own.exchanges.add(Exchange(tenant=TENANT, user_message="hi", reply="yo"))
    await own.exchanges.rate(exchange.id, "a", 1)
    await own.exchanges.rate(exchange.id, "b", -1)
    await own.exchanges.rate(exchange.id, "c", 1)

    [item] = await own.exchanges.rated()

    assert item.votes == {store.user_hash("a"): 1, store.user_hash("b"): -1,
                          store.user_hash("c"): 1}
    assert item.score == 1 and item.ratings == 3


async def test_exam_pins_hold_this_servers_existing_exchanges(store, own):
    first = await own.exchanges.add(Exchange(tenant=TENANT, user_message="a", reply="b"))
    second = await own.exchanges.add(Exchange(tenant=TENANT, user_message="c", reply="d"))
    theirs = await store.exchanges.add(Exchange(tenant=OTHER, user_message="e", reply="f"))

    assert await own.trust.pin_exam(first.id) is True
    assert await own.trust.pin_exam(second.id) is True
    assert await own.trust.pin_exam(first.id) is False
    with pytest.raises(OtherTenant):
        await own.trust.pin_exam(theirs.id)
    with pytest.raises(UnknownExchange):
        await own.trust.pin_exam("missing")
    assert await own.trust.exam_pins() == [first.id, second.id]

    await own.exchanges.forget([first])
    assert await own.trust.exam_pins() == [second.id]
    assert await own.trust.unpin_exam(second.id) is True
    assert await own.trust.exam_pins() == []


async def test_forgetting_a_moderator_removes_their_held_items_everywhere(store, own):
    _, mine = await taught(store, 7, "see example.com")
    _, elsewhere = await taught(store, 7, "see example.net", tenant=OTHER)
    _, others = await taught(store, 8, "see example.org")
    await own.trust.hold([mine, others])
    await store.tenant(OTHER).trust.hold([elsewhere])
    await own.trust.distrust(7)

    done = await store.forget_user(7)

    assert done.held == 2 and done.corrections == 2
    assert [i.id for i in await own.trust.pending()] == [others.id]
    assert await store.tenant(OTHER).trust.pending() == []
    assert await own.trust.distrusted() == frozenset({store.user_hash(7)})  # the decision stays


async def test_wiping_a_server_removes_its_trust_data(store, own):
    exchange, item = await taught(store, "mod", "see example.com")
    await own.trust.hold([item])
    await own.trust.distrust("mod")
    await own.trust.pin_exam(exchange.id)

    await wipe_tenant(store, TENANT)

    keys = store.keys.of(TENANT)
    assert not await raw_redis(store).exists(keys.distrusted, keys.review("items"),
                                    keys.review("pending"), keys.exam_pins)
