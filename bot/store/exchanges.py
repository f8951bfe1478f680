"""Exchanges, moderator ratings and corrections, the counters /stats reads, and forgetting a user.

An exchange is one user message and the bot's reply. It expires after UNRATED_TTL_DAYS unless
a rating or a correction keeps it (training data is kept). Ratings are one per moderator (the
newer replaces the older); the score of an exchange is their sum. Every write that touches more
than one key runs as one Lua script (bot/store/scripts.py), so a failure leaves nothing half.

An exchange belongs to its tenant (server): its rating index, counters and rating events are
that tenant's keys. `Exchanges` scoped to a tenant (store.tenant(id).exchanges) refuses to rate
or correct another tenant's exchange, so one server's moderators act on nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis

from bot.store import scripts
from bot.store.keys import Keys
from bot.store.records import (
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


class Exchanges:
    def __init__(self, client: aioredis.Redis, keys: Keys, user_hash: Callable[[object], str],
                 unrated_ttl_s: int):
        self.r, self.keys, self.user_hash = client, keys, user_hash
        self.unrated_ttl_s = unrated_ttl_s
        self._add = client.register_script(scripts.ADD_EXCHANGE)
        self._rate = client.register_script(scripts.RATE)
        self._correct = client.register_script(scripts.CORRECT)
        self._import = client.register_script(scripts.IMPORT_RATED)

    # --- exchanges ----------------------------------------------------------------------------

    async def add(self, exchange: Exchange, *, user_id: int | str | None = None,
                  keep: bool = False) -> Exchange:
        """Store an exchange; `user_id` is hashed. Unrated ones expire unless `keep`."""
        if user_id is not None:
            exchange = exchange.model_copy(update={"user_hash": self.user_hash(user_id)})
        if self.keys.tenant is not None and exchange.tenant != self.keys.tenant:
            raise OtherTenant(f"an exchange of tenant {exchange.tenant} cannot be stored as "
                              f"tenant {self.keys.tenant}'s")
        k = self.keys
        own = k.of(exchange.tenant) if exchange.tenant is not None else None
        await self._add(
            keys=[k.exchange(exchange.id), k.message(exchange.message_id),
                  k.user_exchanges(exchange.user_hash), own.stats if own else "", k.tenants],
            args=[exchange.model_dump_json(), 0 if keep else self.unrated_ttl_s, exchange.id,
                  time.time(), exchange.adapter_version, exchange.tenant or ""])
        return exchange

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
        await self.r.sadd(k.tenants, k.tenant)
        return stored

    async def exists(self, exchange_id: str) -> bool:
        return bool(await self.r.exists(self.keys.exchange(exchange_id)))

    async def get(self, exchange_id: str) -> Exchange:
        raw = await self.r.get(self.keys.exchange(exchange_id))
        if raw is None:
            raise UnknownExchange(exchange_id)
        return Exchange.model_validate_json(raw)

    async def for_message(self, message_id: int) -> Exchange | None:
        """The exchange whose reply is this Discord message, if the bot still knows it."""
        exchange_id = await self.r.get(self.keys.message(message_id))
        if exchange_id is None:
            return None
        try:
            return await self.get(exchange_id.decode())
        except UnknownExchange:
            return None

    async def _get_many(self, ids: Iterable[str]) -> list[Exchange]:
        """The exchanges of these ids that still exist, in the same order."""
        ids = list(ids)
        if not ids:
            return []
        raws = await self.r.mget([self.keys.exchange(i) for i in ids])
        return [Exchange.model_validate_json(raw) for raw in raws if raw is not None]

    # --- ratings and corrections --------------------------------------------------------------

    async def _indexes(self, exchange_id: str) -> tuple[Exchange, Keys, str, str]:
        """The exchange, its tenant's keys, its message and user index keys (a script must
        name every key); refuses another tenant's exchange and one of no tenant."""
        exchange = await self.get(exchange_id)
        if exchange.tenant is None:
            raise StoreError("this reply was given outside any server and cannot be rated")
        if self.keys.tenant is not None and exchange.tenant != self.keys.tenant:
            raise OtherTenant("that reply belongs to another server")
        return (exchange, self.keys.of(exchange.tenant), self.keys.message(exchange.message_id),
                self.keys.user_exchanges(exchange.user_hash))

    async def _rating_call(self, exchange_id: str, moderator_id: int | str, value: int) -> int:
        exchange, own, message_key, user_key = await self._indexes(exchange_id)
        k = self.keys
        try:
            return int(await self._rate(
                keys=[k.exchange(exchange_id), k.ratings(exchange_id), own.rated,
                      own.rating_events, message_key, user_key, own.stats],
                args=[self.user_hash(moderator_id), str(value), time.time(), exchange_id,
                      RATING_KINDS[value], RATING_STREAM_MAXLEN, exchange.adapter_version]))
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

    async def ratings(self, exchange_id: str) -> dict[str, int]:
        """moderator hash -> +1 or -1."""
        raw = await self.r.hgetall(self.keys.ratings(exchange_id))
        return {key.decode(): int(value) for key, value in raw.items()}

    async def correct(self, exchange_id: str, moderator_id: int | str,
                      text: str) -> Correction:
        """Store a moderator's better reply, replacing that moderator's earlier one."""
        text = text.strip()
        if not text:
            raise StoreError("a correction needs the text of the better reply")
        _, own, message_key, user_key = await self._indexes(exchange_id)
        correction = Correction(exchange_id=exchange_id,
                                moderator_hash=self.user_hash(moderator_id), text=text)
        k = self.keys
        try:
            await self._correct(
                keys=[k.exchange(exchange_id), k.corrections(exchange_id), own.rated,
                      own.rating_events, message_key, user_key, own.stats],
                args=[correction.moderator_hash, correction.model_dump_json(),
                      correction.created_at, exchange_id, RATING_STREAM_MAXLEN])
        except aioredis.ResponseError as error:
            raise _unknown_exchange(error, exchange_id) from None
        return correction

    async def rated(self, limit: int | None = None) -> list[RatedExchange]:
        """Every exchange of this tenant with a rating or a correction, newest first (up to
        `limit`)."""
        end = -1 if limit is None else limit - 1
        ids = [i.decode() for i in await self.r.zrevrange(self.keys.rated, 0, end)]
        exchanges = await self._get_many(ids)
        async with self.r.pipeline(transaction=False) as pipe:  # one round trip for all
            for exchange in exchanges:
                pipe.hvals(self.keys.ratings(exchange.id))
                pipe.hvals(self.keys.corrections(exchange.id))
            replies = await pipe.execute()
        result = []
        for exchange, votes, corrections in zip(exchanges, replies[::2], replies[1::2],
                                                strict=True):
            result.append(RatedExchange(
                exchange=exchange, score=sum(int(v) for v in votes), ratings=len(votes),
                corrections=sorted((Correction.model_validate_json(c) for c in corrections),
                                   key=lambda c: c.created_at)))
        return result

    # --- privacy and statistics -----------------------------------------------------------------

    async def forget_user(self, user_id: int | str) -> int:
        """Delete every exchange of this user (with its ratings and corrections, and their
        share of the counters); returns how many."""
        user_key = self.keys.user_exchanges(self.user_hash(user_id))
        ids = [i.decode() for i in await self.r.zrange(user_key, 0, -1)]
        exchanges = await self._get_many(ids)
        async with self.r.pipeline(transaction=False) as pipe:
            for exchange in exchanges:
                pipe.hvals(self.keys.ratings(exchange.id))
                pipe.hlen(self.keys.corrections(exchange.id))
            replies = await pipe.execute()
        k = self.keys
        async with self.r.pipeline(transaction=True) as pipe:
            for exchange, votes, corrections in zip(exchanges, replies[::2], replies[1::2],
                                                    strict=True):
                if exchange.message_id is not None:
                    pipe.delete(k.message(exchange.message_id))
                if exchange.tenant is None:
                    continue
                own = k.of(exchange.tenant)
                version, score = exchange.adapter_version, sum(int(v) for v in votes)
                pipe.hincrby(own.stats, "exchanges", -1)
                pipe.hincrby(own.stats, f"{version}:exchanges", -1)
                pipe.hincrby(own.stats, f"{version}:rated", -int(bool(votes)))
                pipe.hincrby(own.stats, f"{version}:positive", -int(score > 0))
                pipe.hincrby(own.stats, "corrections", -corrections)
                pipe.zrem(own.rated, exchange.id)
            for exchange_id in ids:
                pipe.delete(k.exchange(exchange_id), k.ratings(exchange_id),
                            k.corrections(exchange_id))
            pipe.delete(user_key)
            await pipe.execute()
        return len(exchanges)

    async def stats(self) -> dict:
        """This tenant's exchanges, ratings and positive share, overall and per adapter version,
        from the counters (no exchange is read, however many there are)."""
        raw = {key.decode(): int(value)
               for key, value in (await self.r.hgetall(self.keys.stats)).items()}
        per_version: dict[str, dict] = {}
        for key, value in raw.items():
            version, _, field = key.rpartition(":")
            if version:
                row = per_version.setdefault(version, {"exchanges": 0, "rated": 0,
                                                       "positive": 0})
                row[field] = value
        per_version = {version: row for version, row in per_version.items()
                       if any(row.values())}  # every exchange of it was forgotten
        for row in per_version.values():
            row["positive_share"] = row["positive"] / row["rated"] if row["rated"] else None
        total = {key: sum(row[key] for row in per_version.values())
                 for key in ("exchanges", "rated", "positive")}
        total["exchanges"] = raw.get("exchanges", 0)
        total["positive_share"] = total["positive"] / total["rated"] if total["rated"] else None
        total["corrections"] = raw.get("corrections", 0)
        return {"total": total, "per_version": per_version}
