"""Forgetting people and deleted messages: what `/forget me` and Discord's deletions remove.

`forget_user` deletes everything the store holds of one person, in every server: the exchanges
they asked (with the replies, ratings and corrections), their messages inside other people's
exchanges (the context turns they wrote are dropped), their ratings and corrections as a
moderator (the counters follow) and those held for review, their hash in the rating event
streams, on the styles they set, on a "train now" request they made and in their cooldown keys.
(A server's distrust of them stays: bot/core/store/trust.py.)

`forget_messages` applies deleted Discord messages: a deleted user message's exchange is
forgotten and its text leaves every exchange that held it as context; a deleted bot reply's
exchange leaves the training data (its tenant's rated index) and is marked so.
`forget_channel` applies a deleted channel or thread, which Discord reports without
per-message deletes: every exchange said there (a channel's threads too) is forgotten.

Adapters trained before keep what they learned; no later cycle uses the forgotten data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from bot.core.store import scripts
from bot.core.store.keys import COOLDOWN_PURPOSES

EVENT_CHUNK = 1000


@dataclass
class Forgotten:
    """What forgetting a person removed."""

    exchanges: int = 0  # the exchanges they asked
    context_turns: int = 0  # their messages inside other people's exchanges
    ratings: int = 0  # their ratings as a moderator
    corrections: int = 0  # their corrections as a moderator
    events: int = 0  # rating events naming them
    styles: int = 0  # styles they set (the styles stay, without their name)
    held: int = 0  # their teachings held for review, in every server


@dataclass
class Deleted:
    """What applying deleted Discord messages changed."""

    exchanges: int = 0  # exchanges whose question was deleted: forgotten
    context_turns: int = 0  # deleted messages dropped from other exchanges' context
    replies: int = 0  # exchanges whose bot reply was deleted: out of the training data


async def forget_user(store, user_id: int | str) -> Forgotten:
    user_hash = store.user_hash(user_id)
    k, exchanges = store.keys, store.exchanges
    done = Forgotten()
    done.exchanges = await exchanges.forget_user(user_id)
    context_key = k.context_exchanges(user_hash)
    for exchange_id in [i.decode() for i in await store._redis.zrange(context_key, 0, -1)]:
        done.context_turns += await exchanges.drop_context(
            exchange_id, lambda turn: turn.author_hash == user_hash)
    await store._redis.delete(context_key)
    done.ratings, done.corrections = await exchanges.forget_moderator(user_hash)
    for tenant in await store.tenants():
        done.held += await store.tenant(tenant).trust.forget_moderator(user_hash)
    done.events = await _scrub_events(store, user_hash)
    done.styles = await store.styles.forget_setter(user_hash)
    await _scrub_requests(store, user_hash)
    await store._redis.delete(*(k.cooldown(purpose, user_hash) for purpose in COOLDOWN_PURPOSES))
    return done


def requester(user_hash: str) -> str:
    """How a "train now" request names the admin who made it from Discord."""
    return f"discord:{user_hash[:16]}"


async def _scrub_requests(store, user_hash: str) -> None:
    """A pending "train now" request of this admin stays, without their name. (Rewritten only
    while unchanged; a trainer that saw the old one keeps the request for one more cycle.)"""
    replace = store._redis.register_script(scripts.REPLACE_IF_SAME)
    for tenant in await store.tenants():
        key = store.keys.of(tenant).trainer("request")
        raw = await store._redis.get(key)
        if raw is None or json.loads(raw).get("by") != requester(user_hash):
            continue
        await replace(keys=[key], args=[raw, json.dumps({**json.loads(raw), "by": "forgotten"})])


async def _scrub_events(store, user_hash: str) -> int:
    """Delete the rating events that name this moderator, in every tenant's stream."""
    removed, mark = 0, user_hash.encode()
    for tenant in await store.tenants():
        key = store.keys.of(tenant).rating_events
        start = "-"
        while True:
            entries = await store._redis.xrange(key, min=start, max="+", count=EVENT_CHUNK)
            doomed = [entry_id for entry_id, fields in entries
                      if fields.get(b"moderator") == mark]
            if doomed:
                removed += await store._redis.xdel(key, *doomed)
            if len(entries) < EVENT_CHUNK:
                break
            start = "(" + entries[-1][0].decode()
    return removed


async def forget_messages(store, message_ids: Iterable[int]) -> Deleted:
    ids = sorted(set(message_ids))
    done = Deleted()
    if not ids:
        return done
    k, exchanges = store.keys, store.exchanges
    async with store._redis.pipeline(transaction=False) as pipe:
        for message_id in ids:
            pipe.get(k.message(message_id))
            pipe.zrange(k.text_exchanges(message_id), 0, -1)
        replies = await pipe.execute()
    for message_id, reply_of, holders in zip(ids, replies[::2], replies[1::2], strict=True):
        if reply_of is not None:
            exchange = await exchanges.for_message(message_id)
            if exchange is not None and await exchanges.reply_deleted(exchange):
                done.replies += 1
        held = await exchanges.get_many(i.decode() for i in holders)
        asked = [e for e in held if e.user_message_id == message_id]
        done.exchanges += await exchanges.forget(asked)
        for exchange in held:
            if exchange.user_message_id != message_id:
                done.context_turns += await exchanges.drop_context(
                    exchange.id, lambda turn, gone=message_id: turn.message_id == gone)
        await store._redis.delete(k.text_exchanges(message_id))
    return done


async def forget_channel(store, tenant: int, channel_id: int) -> int:
    """Forget every exchange of `tenant` said in that channel or thread (or in the threads of
    that channel); returns how many went."""
    own = store.tenant(tenant).exchanges
    key = store.keys.of(tenant).channel_exchanges(channel_id)
    ids = await own.in_channel(channel_id)
    count = 0
    for start in range(0, len(ids), EVENT_CHUNK):
        count += await store.exchanges.forget(await store.exchanges.get_many(
            ids[start:start + EVENT_CHUNK]))
    await store._redis.delete(key)
    return count
