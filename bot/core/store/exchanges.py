"""Exchanges with their moderator ratings and corrections (the records themselves, their
indexes, expiry and counters: exchange_records.py).

Ratings are one per moderator (the newer replaces the older); the score of an exchange is their
sum. A rating or a correction keeps its exchange for good, as training data. Every write runs as
one Lua script (bot/core/store/scripts.py), so a failure leaves nothing half.

An exchange belongs to its tenant (server): its rating index, counters and rating events are
that tenant's keys. `Exchanges` scoped to a tenant (store.tenant(id).exchanges) refuses to rate
or correct another tenant's exchange, so one server's moderators act on nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis

from bot.core.store import scripts
from bot.core.store.exchange_records import ExchangeRecords
from bot.core.store.keys import Keys
from bot.core.store.records import (
    Correction,
    Exchange,
    OtherTenant,
    RatedExchange,
    StoreError,
    UnknownExchange,
)

RATING_STREAM_MAXLEN = 100_000
RATING_KINDS = {1: "up", -1: "down", 0: "withdraw"}


def _unknown_exchange(error: aioredis.ResponseError, exchange_id: str) -> Exception:
    if "UNKNOWN_EXCHANGE" in str(error):
        return UnknownExchange(exchange_id)
    return error


class Exchanges(ExchangeRecords):
    """Exchange records (ExchangeRecords) and what moderators add to them."""

    def __init__(self, client: aioredis.Redis, keys: Keys, user_hash: Callable[[object], str],
                 unrated_ttl_s: int):
        super().__init__(client, keys, user_hash, unrated_ttl_s)
        self._rate = client.register_script(scripts.RATE)
        self._correct = client.register_script(scripts.CORRECT)
        self._import = client.register_script(scripts.IMPORT_RATED)
        self._forget_moderator = client.register_script(scripts.FORGET_MODERATOR)

    async def import_rated(self, exchanges: list[Exchange],
                           moderator_id: int | str) -> list[bool]:
        """Store exchanges kept forever, each rated +1 by `moderator_id`, in one atomic script
        (nothing is stored when it fails); True per exchange stored, False per duplicate (one
        already rated by that moderator). An exchange stored earlier without its rating gets
        the rating now."""
        if not exchanges:
            return []
        k = self.keys
        if any(exchange.tenant != k.tenant or k.tenant is None for exchange in exchanges):
            raise OtherTenant("imported exchanges are stored through their own server's store")
        keys, args = [k.rated, k.rating_events, k.stats], [self.user_hash(moderator_id),
                                                           time.time(), RATING_STREAM_MAXLEN]
        for exchange in exchanges:
            keys += [k.exchange(exchange.id), k.ratings(exchange.id)]
            args += [exchange.id, exchange.model_dump_json(), exchange.adapter_version]
        stored = [bool(flag) for flag in await self._import(keys=keys, args=args)]
        await self._redis.sadd(k.tenants, k.tenant)
        return stored

    async def _indexes(self, exchange_id: str) -> tuple[Exchange, Keys, list[str], int]:
        """The exchange, its tenant's keys, its lifetime keys (message index keys first) and
        how many of those are message keys (a script must name every key); refuses another
        tenant's exchange and one of no tenant."""
        exchange = await self.get(exchange_id)
        if exchange.tenant is None:
            raise StoreError("this reply was given outside any server and cannot be rated")
        if self.keys.tenant is not None and exchange.tenant != self.keys.tenant:
            raise OtherTenant("that reply belongs to another server")
        messages, zsets = self.lifetime_keys(exchange)
        return exchange, self.keys.of(exchange.tenant), [*messages, *zsets], len(messages)

    async def _rating_call(self, exchange_id: str, moderator_id: int | str, value: int) -> int:
        return await self._hashed_rating_call(exchange_id, self.user_hash(moderator_id), value)

    async def _hashed_rating_call(self, exchange_id: str, moderator: str, value: int) -> int:
        exchange, own, lifetime, messages = await self._indexes(exchange_id)
        k = self.keys
        try:
            return int(await self._rate(
                keys=[k.exchange(exchange_id), k.ratings(exchange_id), own.rated,
                      own.rating_events, own.stats, k.moderator_exchanges(moderator),
                      *lifetime],
                args=[moderator, str(value), time.time(), exchange_id, RATING_KINDS[value],
                      RATING_STREAM_MAXLEN, exchange.adapter_version, messages]))
        except aioredis.ResponseError as error:
            raise _unknown_exchange(error, exchange_id) from None

    async def rate(self, exchange_id: str, moderator_id: int | str, value: int) -> int:
        """Set this moderator's rating (+1 or -1), replacing an earlier one; returns the score."""
        if value not in (1, -1):
            raise StoreError(f"a rating is +1 or -1, not {value!r}")
        return await self._rating_call(exchange_id, moderator_id, value)

    async def withdraw(self, exchange_id: str, moderator_id: int | str) -> int:
        """Remove this moderator's rating, if any; returns the score."""
        return await self._rating_call(exchange_id, moderator_id, 0)

    async def withdraw_all(self, exchange_id: str, value: int | None = None) -> int:
        """Remove every rating (`value`: every rating of that value) of the exchange, as when
        its reply's reactions were cleared; returns how many were removed."""
        found = [moderator for moderator, given in (await self.ratings(exchange_id)).items()
                 if value is None or given == value]
        for moderator in found:
            await self._hashed_rating_call(exchange_id, moderator, 0)
        return len(found)

    async def ratings(self, exchange_id: str) -> dict[str, int]:
        """moderator hash -> +1 or -1."""
        raw = await self._redis.hgetall(self.keys.ratings(exchange_id))
        return {key.decode(): int(value) for key, value in raw.items()}

    async def correct(self, exchange_id: str, moderator_id: int | str, text: str,
                      moderator_name: str | None = None) -> Correction:
        """Store a moderator's better reply, replacing that moderator's earlier one."""
        text = text.strip()
        if not text:
            raise StoreError("a correction needs the text of the better reply")
        _, own, lifetime, messages = await self._indexes(exchange_id)
        correction = Correction(exchange_id=exchange_id,
                                moderator_hash=self.user_hash(moderator_id), text=text,
                                moderator_name=moderator_name)
        k = self.keys
        try:
            await self._correct(
                keys=[k.exchange(exchange_id), k.corrections(exchange_id), own.rated,
                      own.rating_events, own.stats,
                      k.moderator_exchanges(correction.moderator_hash), *lifetime],
                args=[correction.moderator_hash, correction.model_dump_json(),
                      correction.created_at, exchange_id, RATING_STREAM_MAXLEN, messages])
        except aioredis.ResponseError as error:
            raise _unknown_exchange(error, exchange_id) from None
        return correction

    async def rated(self, limit: int | None = None) -> list[RatedExchange]:
        """Every exchange of this tenant with a rating or a correction, newest first (up to
        `limit`), with who rated it and who taught what."""
        end = -1 if limit is None else limit - 1
        ids = [i.decode() for i in await self._redis.zrevrange(self.keys.rated, 0, end)]
        exchanges = await self.get_many(ids)
        async with self._redis.pipeline(transaction=False) as pipe:  # one round trip for all
            for exchange in exchanges:
                pipe.hgetall(self.keys.ratings(exchange.id))
                pipe.hvals(self.keys.corrections(exchange.id))
            replies = await pipe.execute()
        result = []
        for exchange, raw_votes, corrections in zip(exchanges, replies[::2], replies[1::2],
                                                    strict=True):
            votes = {moderator.decode(): int(value) for moderator, value in raw_votes.items()}
            result.append(RatedExchange(
                exchange=exchange, score=sum(votes.values()), ratings=len(votes), votes=votes,
                corrections=sorted((Correction.model_validate_json(c) for c in corrections),
                                   key=lambda c: c.created_at)))
        return result

    async def forget_moderator(self, moderator_hash: str) -> tuple[int, int]:
        """Take every rating and correction of this moderator (by hash) off their exchanges,
        keeping the counters right; returns (ratings, corrections) removed."""
        k = self.keys
        key = k.moderator_exchanges(moderator_hash)
        ids = [i.decode() for i in await self._redis.smembers(key)]
        by_id = {e.id: e for e in await self.get_many(ids)}
        ratings = corrections = 0
        for exchange_id in ids:
            exchange = by_id.get(exchange_id)
            own = k.of(exchange.tenant) if exchange and exchange.tenant is not None else None
            removed = await self._forget_moderator(
                keys=[k.ratings(exchange_id), k.corrections(exchange_id),
                      own.stats if own else ""],
                args=[moderator_hash, exchange.adapter_version if exchange else ""])
            ratings, corrections = ratings + int(removed[0]), corrections + int(removed[1])
        await self._redis.delete(key)
        return ratings, corrections
