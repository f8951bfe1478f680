"""Forgetting people and deleted messages in the store (bot/core/store/privacy.py), on real Redis:
across servers, with the counters right, and with indexes that live exactly as long as the
exchanges they find."""

from __future__ import annotations

from store_util import TENANT, raw_redis
from test_store import make_exchange

from bot.core.store import Store, TurnRecord, exchange_records
from bot.core.store.wipe import wipe_tenant

OTHER = 2  # a second server


async def events_naming(store: Store, tenant: int, moderator_hash: str) -> int:
    entries = await raw_redis(store).xrange(store.keys.of(tenant).rating_events)
    return sum(1 for _, fields in entries if fields[b"moderator"] == moderator_hash.encode())


async def test_forgetting_a_moderator_in_two_servers_keeps_the_counters_right(store: Store):
    here = await store.exchanges.add(make_exchange(message_id=1), user_id=10)
    there = await store.exchanges.add(make_exchange(tenant=OTHER, message_id=2), user_id=11)
    for exchange in (here, there):
        await store.exchanges.rate(exchange.id, 99, 1)
        await store.exchanges.rate(exchange.id, 98, -1)
    await store.exchanges.rate(here.id, 98, 1)  # now both up here
    await store.exchanges.correct(there.id, 99, "A better reply.")
    moderator = store.user_hash(99)

    done = await store.forget_user(99)

    assert (done.exchanges, done.ratings, done.corrections, done.events) == (0, 2, 1, 3)
    assert await store.exchanges.ratings(here.id) == {store.user_hash(98): 1}
    assert await store.exchanges.ratings(there.id) == {store.user_hash(98): -1}
    assert await raw_redis(store).hlen(store.keys("co", there.id)) == 0
    for tenant, positive in ((TENANT, 1), (OTHER, 0)):
        total = (await store.tenant(tenant).exchanges.stats())["total"]
        assert (total["rated"], total["positive"], total["corrections"]) == (1, positive, 0)
        assert await events_naming(store, tenant, moderator) == 0
        assert await events_naming(store, tenant, store.user_hash(98)) > 0
    assert not await raw_redis(store).exists(store.keys("mod", moderator))


async def test_indexes_live_as_long_as_their_exchanges(store: Store):
    context = [TurnRecord(role="user", text="my phone is 555-0100", message_id=1000,
                          author_hash=store.user_hash(5))]
    exchange = await store.exchanges.add(
        make_exchange(context=context, message_id=7, extra_message_ids=[8, 9]), user_id=6)
    keys = [store.keys("ex", "text", 1000), store.keys("ex", "text", 299),
            store.keys("ex", "ctx", store.user_hash(5)),
            store.keys.of(TENANT).channel_exchanges(2),
            *(store.keys("ex", "msg", m) for m in (7, 8, 9))]
    for key in keys:
        assert 0 < await raw_redis(store).ttl(key) <= store.exchanges.unrated_ttl_s, key

    await store.exchanges.rate(exchange.id, 99, 1)  # kept: so is everything that finds it

    for key in keys:
        assert await raw_redis(store).ttl(key) == -1, key
    assert await store.exchanges.for_message(9) == exchange


async def test_a_deleted_channel_forgets_its_exchanges_and_its_threads(store: Store, own):
    in_channel = await store.exchanges.add(make_exchange(channel_id=2, message_id=7), user_id=6)
    in_thread = await store.exchanges.add(make_exchange(channel_id=3, parent_id=2, message_id=8),
                                          user_id=6)
    elsewhere = await store.exchanges.add(make_exchange(channel_id=4, message_id=9), user_id=7)
    await store.exchanges.rate(in_thread.id, 99, 1)

    assert await store.forget_channel(TENANT, 3) == 1  # the thread
    assert await store.forget_channel(TENANT, 2) == 1  # the channel (its thread's is gone)

    assert await own.exchanges.recent(0) == [elsewhere]
    assert await own.exchanges.rated() == []
    assert (await own.exchanges.stats())["total"]["exchanges"] == 1
    for channel_id in (2, 3):
        assert not await raw_redis(store).exists(store.keys.of(TENANT).channel_exchanges(
            channel_id))
    assert not await store.exchanges.exists(in_channel.id)


async def test_exchanges_stored_before_the_channel_index_are_put_in_it_once(store: Store):
    kept = await store.exchanges.add(make_exchange(channel_id=3, parent_id=2, message_id=7),
                                     user_id=6)
    await store.exchanges.rate(kept.id, 99, 1)
    unrated = await store.exchanges.add(make_exchange(channel_id=2, message_id=8), user_id=6)
    channel, thread = (store.keys.of(TENANT).channel_exchanges(c) for c in (2, 3))
    # As an older version left them: no channel index, not marked as indexed.
    await raw_redis(store).delete(channel, thread, store.keys("indexed", "channels"))

    await store.ping()

    assert sorted(await store.tenant(TENANT).exchanges.in_channel(2)) == sorted(
        [kept.id, unrated.id])
    assert await raw_redis(store).ttl(channel) == -1  # it holds a kept exchange
    assert await raw_redis(store).zscore(thread, kept.id) == float("inf")
    assert await store.forget_channel(TENANT, 2) == 2


async def test_the_recent_exchanges_are_bounded_and_leave_with_their_exchanges(
        store: Store, own, monkeypatch):
    monkeypatch.setattr(exchange_records, "RECENT_KEPT", 2)
    first, second, third = [await store.exchanges.add(make_exchange(message_id=m), user_id=u)
                            for m, u in ((7, 5), (8, 6), (9, 6))]
    assert await own.exchanges.recent(0) == [second, third]  # the newest RECENT_KEPT

    await store.forget_user(6)

    assert await own.exchanges.recent(0) == []
    assert not await raw_redis(store).exists(store.keys.of(TENANT).recent_exchanges)
    assert await own.exchanges.in_channel(2) == [first.id]


async def test_deleting_any_piece_of_a_reply_takes_it_out_of_training(store: Store, own):
    exchange = await store.exchanges.add(make_exchange(message_id=7, extra_message_ids=[8, 9]),
                                         user_id=6)
    await store.exchanges.rate(exchange.id, 99, 1)

    done = await store.forget_messages([9])

    assert (done.replies, done.exchanges) == (1, 0)
    assert await own.exchanges.rated() == []
    assert (await store.exchanges.get(exchange.id)).reply_deleted
    for piece in (7, 8, 9):
        assert await store.exchanges.for_message(piece) is None
    assert (await store.forget_messages([9])).replies == 0  # applying it again changes nothing


async def test_a_deleted_context_message_leaves_every_exchange_holding_it(store: Store, own):
    said = TurnRecord(role="user", text="my phone is 555-0100", message_id=1000,
                      author_hash=store.user_hash(5))
    first = await store.exchanges.add(make_exchange(context=[said], message_id=7,
                                                    user_message_id=70), user_id=6)
    second = await store.exchanges.add(make_exchange(context=[said], message_id=8,
                                                     user_message_id=80), user_id=7)

    done = await store.forget_messages([1000])

    assert (done.context_turns, done.exchanges) == (2, 0)
    for exchange in (first, second):
        assert (await store.exchanges.get(exchange.id)).context == []
    assert not await raw_redis(store).exists(store.keys("ex", "text", 1000))
    # The author forgetting themselves later finds nothing left of that message.
    assert (await store.forget_user(5)).context_turns == 0
    assert (await own.exchanges.stats())["total"]["exchanges"] == 2


async def test_wiping_a_server_leaves_none_of_its_channel_or_recent_indexes(store: Store):
    await store.exchanges.add(make_exchange(tenant=OTHER, channel_id=2, parent_id=5),
                              user_id=6)
    # An entry of an exchange that expired, not pruned yet (pruning happens as it is written).
    await raw_redis(store).zadd(store.keys.of(OTHER).channel_exchanges(2), {"gone": 1.0})
    await store.exchanges.add(make_exchange(channel_id=2), user_id=6)  # another server's

    await wipe_tenant(store, OTHER)

    left = [key async for key in raw_redis(store).scan_iter(match=store.keys("g", OTHER, "*"))]
    assert left == []
    assert await store.tenant(TENANT).exchanges.in_channel(2) != []
