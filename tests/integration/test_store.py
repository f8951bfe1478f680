"""The Redis data layer against a real redis-server."""

from __future__ import annotations

import asyncio
import json

import pytest
from store_util import TENANT, corrections, exchange_count, raw_redis, score

from bot.core.store import (
    AdapterCorrupt,
    AdapterRecord,
    Exchange,
    OtherTenant,
    Store,
    StoreError,
    TurnRecord,
    UnknownAdapter,
    UnknownExchange,
)


def make_exchange(**fields) -> Exchange:
    values = dict(tenant=TENANT, guild_id=1, channel_id=2, message_id=300, user_message_id=299,
                  context=[TurnRecord(role="user", text="hi"), TurnRecord(role="bot", text="hey")],
                  user_message="how are you?", style="Answer kindly:", reply="Fine, thanks!",
                  adapter_version="v3", latency_ms=12.5, prompt_tokens=20, reply_tokens=4)
    values.update(fields)
    return Exchange(**values)


async def test_exchange_round_trips_with_hashed_user(store: Store):
    stored = await store.exchanges.add(make_exchange(), user_id=4242)
    loaded = await store.exchanges.get(stored.id)
    assert loaded == stored
    assert loaded.user_hash == store.user_hash(4242) != "4242"
    assert "4242" not in (await raw_redis(store).get(store.keys("ex", stored.id))).decode()
    assert (await store.exchanges.for_message(300)).id == stored.id
    assert await store.exchanges.for_message(999) is None
    assert [t.role for t in loaded.turns()] == ["user", "bot", "user"]


async def test_unknown_exchange_gets_a_clear_error(store: Store, own):
    with pytest.raises(UnknownExchange, match="no exchange with id 'nope'"):
        await store.exchanges.get("nope")
    with pytest.raises(UnknownExchange):
        await store.exchanges.rate("nope", moderator_id=1, value=1)
    with pytest.raises(UnknownExchange):
        await store.exchanges.correct("nope", moderator_id=1, text="better")
    # A refused rating leaves no trace behind.
    assert await store.exchanges.ratings("nope") == {}
    assert (await own.trainer.snapshot()).newest_event == "0-0"


async def test_rating_twice_by_one_moderator_counts_once(store: Store):
    ex = await store.exchanges.add(make_exchange())
    assert await store.exchanges.rate(ex.id, moderator_id=7, value=1) == 1
    assert await store.exchanges.rate(ex.id, moderator_id=7, value=1) == 1
    assert await store.exchanges.rate(ex.id, moderator_id=8, value=1) == 2
    # Changing a rating replaces it; withdrawing removes it.
    assert await store.exchanges.rate(ex.id, moderator_id=7, value=-1) == 0
    assert await store.exchanges.withdraw(ex.id, moderator_id=8) == -1
    assert await score(store, ex.id) == -1
    assert len(await store.exchanges.ratings(ex.id)) == 1
    with pytest.raises(StoreError, match=r"\+1 or -1"):
        await store.exchanges.rate(ex.id, moderator_id=7, value=2)


async def test_fifty_concurrent_moderators_all_count(store: Store, own):
    ex = await store.exchanges.add(make_exchange())
    scores = await asyncio.gather(*(store.exchanges.rate(ex.id, moderator_id=m, value=1)
                                    for m in range(50)))
    assert sorted(scores) == list(range(1, 51))
    assert await score(store, ex.id) == 50
    assert (await own.trainer.snapshot()).new_ratings == 50


async def test_rating_keeps_an_exchange_from_expiring(store: Store, own):
    ex = await store.exchanges.add(make_exchange())
    assert 0 < await raw_redis(store).ttl(store.keys("ex", ex.id)) <= store.exchanges.unrated_ttl_s
    assert await raw_redis(store).ttl(store.keys("ex", "msg", 300)) > 0
    await store.exchanges.rate(ex.id, moderator_id=1, value=-1)
    assert await raw_redis(store).ttl(store.keys("ex", ex.id)) == -1  # no expiry
    assert await raw_redis(store).ttl(store.keys("ex", "msg", 300)) == -1
    unrated = await store.exchanges.add(make_exchange(message_id=301))
    await raw_redis(store).pexpire(store.keys("ex", unrated.id), 1)
    await asyncio.sleep(0.05)
    assert [r.exchange.id for r in await own.exchanges.rated()] == [ex.id]
    assert not await store.exchanges.exists(unrated.id) and await store.exchanges.exists(ex.id)


async def test_corrections_are_their_own_records(store: Store, own):
    ex = await store.exchanges.add(make_exchange())
    await store.exchanges.correct(ex.id, moderator_id=5, text="  I am well, thank you.  ")
    await store.exchanges.correct(ex.id, moderator_id=6, text="Great!")
    await store.exchanges.correct(ex.id, moderator_id=5, text="Very well, thanks.")  # replaces
    texts = sorted(c.text for c in await corrections(store, ex.id))
    assert texts == ["Great!", "Very well, thanks."]
    assert await score(store, ex.id) == 0  # a correction is not a vote
    rated = await own.exchanges.rated()
    assert rated[0].exchange.id == ex.id and len(rated[0].corrections) == 2
    with pytest.raises(StoreError, match="text"):
        await store.exchanges.correct(ex.id, moderator_id=5, text="   ")


async def test_rated_exchanges_derive_their_score(store: Store, own):
    up = await store.exchanges.add(make_exchange(message_id=1))
    down = await store.exchanges.add(make_exchange(message_id=2))
    await store.exchanges.add(make_exchange(message_id=3))  # never rated
    for moderator in (1, 2):
        await store.exchanges.rate(up.id, moderator, 1)
    await store.exchanges.rate(down.id, 1, -1)
    found = {r.exchange.id: (r.score, r.ratings) for r in await own.exchanges.rated()}
    assert found == {up.id: (2, 2), down.id: (-1, 1)}


async def test_styles_channel_overrides_guild(store: Store):
    assert await store.styles.in_force(1, 2) is None
    await store.styles.set("guild", 1, "Answer as a polite support agent:", set_by=9)
    assert (await store.styles.in_force(1, 2)).prefix == "Answer as a polite support agent:"
    await store.styles.set("channel", 2, "Answer like a pirate:")
    style = await store.styles.in_force(1, 2)
    assert (style.prefix, style.scope) == ("Answer like a pirate:", "channel")
    assert (await store.styles.in_force(1, 3)).scope == "guild"
    assert await store.styles.clear("channel", 2)
    assert (await store.styles.in_force(1, 2)).scope == "guild"
    assert not await store.styles.clear("channel", 2)
    with pytest.raises(StoreError, match="scope"):
        await store.styles.set("planet", 1, "x")


async def test_chat_channels(store: Store):
    assert not await store.chat.is_on(5)
    await store.chat.set(5, True)
    assert await store.chat.is_on(5)
    await store.chat.set(5, False)
    assert not await store.chat.is_on(5)


def adapter_record(**fields) -> AdapterRecord:
    values = dict(parent="base", base_model="gpt2", hyperparameters={"learning_rate": 3e-4,
                  "batch_size": 8}, trials=[{"number": 0, "value": 2.5}],
                  metrics={"val_loss": {"candidate": 2.5}}, data={"train": 30, "validation": 8})
    values.update(fields)
    return AdapterRecord(**values)


async def test_adapter_registry_round_trip_and_sha256(store: Store, own):
    blob = b"\x00safetensors-bytes\xff" * 10
    record = await own.registry.save(adapter_record(), blob)
    assert record.version == "v1" and record.size_bytes == len(blob)
    assert await store.registry.record("v1") == record
    assert await store.registry.blob("v1") == blob
    second = await own.registry.save(adapter_record(parent="v1"), b"other")
    assert second.version == "v2"
    assert [r.version for r in await own.registry.records()] == ["v1", "v2"]
    # A corrupted blob is refused on read.
    await raw_redis(store).setrange(store.keys("ad", "v1", "blob"), 3, b"X")
    with pytest.raises(AdapterCorrupt, match="sha256"):
        await store.registry.blob("v1")
    with pytest.raises(UnknownAdapter):
        await store.registry.blob("v9")
    with pytest.raises(StoreError):
        await own.registry.save(adapter_record(), b"")


async def test_active_pointer_swap_and_rollback(store: Store, own):
    for _ in range(2):
        await own.registry.save(adapter_record(), b"blob")
    assert await own.registry.active() == "base"
    assert await own.registry.activate("v1") == "base"
    assert await own.registry.activate("v2", expected="v1") == "v1"
    with pytest.raises(StoreError, match="changed meanwhile"):
        await own.registry.activate("v1", expected="v1")
    assert await own.registry.active() == "v2"
    with pytest.raises(UnknownAdapter):
        await own.registry.activate("v7")
    assert await own.registry.history() == ["v1", "base"]
    assert (await own.registry.rollback()).version == "v1"
    assert (await own.registry.rollback()).version == "base"
    assert await own.registry.active() == "base"
    with pytest.raises(StoreError, match="no earlier adapter"):
        await own.registry.rollback()


async def test_adapter_events_are_published(store: Store, own):
    await own.registry.save(adapter_record(), b"blob")
    events = store.registry.events()
    first = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.2)  # let the subscription start before publishing
    await own.registry.activate("v1")
    event = await asyncio.wait_for(first, 5)
    assert (event.kind, event.version, event.previous) == ("activated", "v1", "base")
    await own.registry.rollback()
    event = await asyncio.wait_for(events.__anext__(), 5)
    assert (event.kind, event.version, event.previous) == ("rollback", "base", "v1")
    await events.aclose()


async def test_reports_are_json_and_png_bytes(store: Store):
    await store.registry.save_report("v1", {"val_loss": 1.5}, b"\x89PNG...")
    assert await store.registry.report("v1") == ({"val_loss": 1.5}, b"\x89PNG...")
    assert await store.registry.report("v2") == (None, None)


async def test_trainer_cursor_lock_and_requests(store: Store, own):
    ex = await store.exchanges.add(make_exchange())
    assert (await own.trainer.snapshot()).cursor == "0-0"
    await store.exchanges.rate(ex.id, 1, 1)
    first = (await own.trainer.snapshot()).newest_event
    await store.exchanges.rate(ex.id, 2, 1)
    await store.exchanges.withdraw(ex.id, 2)
    assert (await own.trainer.snapshot()).new_ratings == 3
    await own.trainer.set_cursor(first)
    snapshot = await own.trainer.snapshot()
    assert snapshot.cursor == first and snapshot.new_ratings == 2

    assert await own.trainer.acquire_lock("a", 5)
    assert not await own.trainer.acquire_lock("b", 5)
    assert not await own.trainer.renew_lock("b", 5)
    assert await own.trainer.renew_lock("a", 5)
    assert not await own.trainer.release_lock("b")
    assert await own.trainer.release_lock("a")
    assert await own.trainer.acquire_lock("b", 0.05)
    await asyncio.sleep(0.1)
    assert await own.trainer.acquire_lock("c", 5)  # the expired lock is free again

    assert await own.trainer.take_request() is None
    await own.trainer.request_training("admin")
    assert (await own.trainer.take_request())["by"] == "admin"
    assert await own.trainer.take_request() is None

    for n in range(3):
        await own.trainer.record_run({"outcome": "skipped", "n": n})
    assert [r["n"] for r in await own.trainer.recent_runs(2)] == [2, 1]


async def test_forget_user_removes_exactly_that_users_exchanges(store: Store, own):
    mine = [await store.exchanges.add(make_exchange(message_id=10 + n), user_id=1)
            for n in range(3)]
    theirs = await store.exchanges.add(make_exchange(message_id=20), user_id=2)
    await store.exchanges.rate(mine[0].id, 99, 1)
    await store.exchanges.correct(mine[1].id, 99, "better")
    assert await store.exchanges.forget_user(1) == 3
    for ex in mine:
        assert not await store.exchanges.exists(ex.id)
        assert await store.exchanges.ratings(ex.id) == {} and await corrections(store, ex.id) == []
    assert await store.exchanges.for_message(10) is None
    assert await store.exchanges.get(theirs.id) == theirs
    assert [r.exchange.id for r in await own.exchanges.rated()] == []
    assert await exchange_count(store) == 1
    assert await store.exchanges.forget_user(1) == 0


async def test_stats_per_adapter_version(store: Store, own):
    a = await store.exchanges.add(make_exchange(adapter_version="v1", message_id=1))
    b = await store.exchanges.add(make_exchange(adapter_version="v1", message_id=2))
    await store.exchanges.add(make_exchange(adapter_version="v2", message_id=3))
    await store.exchanges.rate(a.id, 1, 1)
    await store.exchanges.rate(b.id, 1, -1)
    stats = await own.exchanges.stats()
    assert stats["per_version"]["v1"] == {"exchanges": 2, "rated": 2, "positive": 1,
                                          "positive_share": 0.5}
    assert stats["per_version"]["v2"]["positive_share"] is None
    assert stats["total"]["exchanges"] == 3


async def test_redis_holds_json_and_bytes_only(store: Store):
    ex = await store.exchanges.add(make_exchange(), user_id=3)
    await store.exchanges.rate(ex.id, 1, 1)
    raw = await raw_redis(store).get(store.keys("ex", ex.id))
    assert json.loads(raw)["reply"] == "Fine, thanks!"
    assert not raw.startswith(b"\x80")  # no pickle protocol header


async def test_schema_version_is_checked(store: Store):
    assert int(await raw_redis(store).get(store.keys("schema"))) == 2
    await raw_redis(store).set(store.keys("schema"), 99)
    with pytest.raises(StoreError, match="schema version 99"):
        await store.ping()


async def test_a_claim_goes_to_the_first_caller_until_it_expires(store: Store):
    assert await store.claim("cd", "reply", "u1", ttl_s=0.2)
    assert not await store.claim("cd", "reply", "u1", ttl_s=0.2)
    assert await store.claim("cd", "reply", "u2", ttl_s=0.2)
    await asyncio.sleep(0.3)
    assert await store.claim("cd", "reply", "u1", ttl_s=0.2)


async def test_user_index_is_pruned_and_expires_with_unrated_exchanges(store: Store, own):
    """Unrated exchanges expire; their index entries and counts must not pile up forever."""
    user_key = store.keys("ex", "user", store.user_hash(7))
    old = await store.exchanges.add(make_exchange(message_id=1), user_id=7)
    assert 0 < await raw_redis(store).ttl(user_key) <= store.exchanges.unrated_ttl_s
    # The old exchange expires (as Redis would after UNRATED_TTL_DAYS) ...
    await raw_redis(store).delete(store.keys("ex", old.id))
    # ... its index entry's expiry is in the past
    await raw_redis(store).zadd(user_key, {old.id: 1.0})
    new = await store.exchanges.add(make_exchange(message_id=2), user_id=7)
    assert [m.decode() for m in await raw_redis(store).zrange(user_key, 0, -1)] == [new.id]

    # A rated exchange is kept, and so is the index that lets /forget me find it.
    await store.exchanges.rate(new.id, 1, 1)
    assert await raw_redis(store).ttl(user_key) == -1
    assert await store.exchanges.forget_user(7) == 1
    # No index of every exchange ever stored is kept; the count comes from counters.
    assert not await raw_redis(store).exists(store.keys("ex", "all"))
    assert (await own.exchanges.stats())["total"]["exchanges"] == 1  # the expired one


async def test_rollback_reports_the_versions_it_moved_between(store: Store, own):
    for _ in range(3):
        await own.registry.save(adapter_record(), b"blob")
    for version in ("v1", "v2", "v3"):
        await own.registry.activate(version)
    events = await asyncio.gather(own.registry.rollback(), own.registry.rollback())
    # Read inside the script: two concurrent rollbacks name two different steps back.
    assert sorted((e.previous, e.version) for e in events) == [("v2", "v1"), ("v3", "v2")]


async def test_a_server_acts_only_on_its_own_exchanges_and_adapters(store: Store):
    other = await store.exchanges.add(make_exchange(tenant=2, message_id=5))
    mine = await store.exchanges.add(make_exchange(message_id=6))
    own, theirs = store.tenant(TENANT), store.tenant(2)
    with pytest.raises(OtherTenant):
        await own.exchanges.rate(other.id, moderator_id=1, value=1)
    with pytest.raises(OtherTenant):
        await own.exchanges.correct(other.id, moderator_id=1, text="better")
    assert await store.exchanges.ratings(other.id) == {}
    await own.exchanges.rate(mine.id, moderator_id=1, value=1)
    assert [r.exchange.id for r in await own.exchanges.rated()] == [mine.id]
    assert await theirs.exchanges.rated() == []
    assert (await theirs.exchanges.stats())["total"]["exchanges"] == 1

    record = await theirs.registry.save(adapter_record(), b"blob")
    assert record.tenant == 2 and await own.registry.records() == []
    with pytest.raises(OtherTenant):
        await own.registry.activate(record.version)
    assert await theirs.registry.activate(record.version) == "base"
    assert (await own.registry.active(), await theirs.registry.active()) == ("base", "v1")
    assert await store.tenants() == [TENANT, 2]


async def test_delete_all_keys_removes_only_its_own_prefix(store: Store):
    neighbour = Store(raw_redis(store), prefix=store.prefix + "-next", user_secret="s")
    await neighbour.exchanges.add(make_exchange(), user_id=1)
    await store.exchanges.add(make_exchange(), user_id=1)
    assert await store.delete_all_keys() > 0
    assert [key async for key in raw_redis(store).scan_iter(match=store.keys("*"))] == []
    assert await exchange_count(neighbour) == 1
