"""Exchanges, moderator ratings and corrections, the counters /stats reads, and forgetting a user.

An exchange is one user message and the bot's reply. It expires after UNRATED_TTL_DAYS unless
a rating or a correction keeps it (training data is kept). Ratings are one per moderator (the
newer replaces the older); the score of an exchange is their sum. Every write that touches more
than one key runs as one Lua script (bot/core/store/scripts.py), so a failure leaves nothing half.

An exchange belongs to its tenant (server): its rating index, counters and rating events are
that tenant's keys. `Exchanges` scoped to a tenant (store.tenant(id).exchanges) refuses to rate
or correct another tenant's exchange, so one server's moderators act on nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis

from bot.core.store import scripts
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
REWRITE_ATTEMPTS = 5  # compare-and-set rewrites of an exchange that others change meanwhile
RATING_KINDS = {1: "up", -1: "down", 0: "withdraw"}


def _unknown_exchange(error: aioredis.ResponseError, exchange_id: str) -> Exception:
    if "UNKNOWN_EXCHANGE" in str(error):
        return UnknownExchange(exchange_id)
    return error


class Exchanges:
    def __init__(self, client: aioredis.Redis, keys: Keys, user_hash: Callable[[object], str],
                 unrated_ttl_s: int):
        self._redis, self.keys, self.user_hash = client, keys, user_hash
        self.unrated_ttl_s = unrated_ttl_s
        self._add = client.register_script(scripts.ADD_EXCHANGE)
        self._rate = client.register_script(scripts.RATE)
        self._correct = client.register_script(scripts.CORRECT)
        self._import = client.register_script(scripts.IMPORT_RATED)
        self._forget = client.register_script(scripts.FORGET_EXCHANGE)
        self._forget_moderator = client.register_script(scripts.FORGET_MODERATOR)
        self._replace = client.register_script(scripts.REPLACE_IF_SAME)

    def lifetime_keys(self, exchange: Exchange) -> tuple[list[str], list[str]]:
        """What finds an exchange and lives as long as it: the index key of each message of
        its reply, and the zset indexes it is in (its user's, the text of each user message it
        holds, the context of each other author in it)."""
        k = self.keys
        messages = [k.message(m) for m in exchange.message_ids]
        zsets = [k.user_exchanges(exchange.user_hash)] if exchange.user_hash else []
        said = {t.message_id for t in exchange.context
                if t.role == "user" and t.message_id is not None}
        if exchange.user_message_id is not None:
            said.add(exchange.user_message_id)
        zsets += [k.text_exchanges(m) for m in sorted(said)]
        authors = {t.author_hash for t in exchange.context
                   if t.author_hash and t.author_hash != exchange.user_hash}
        zsets += [k.context_exchanges(h) for h in sorted(authors)]
        return messages, zsets

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
        messages, zsets = self.lifetime_keys(exchange)
        await self._add(
            keys=[k.exchange(exchange.id), own.stats if own else "", k.tenants, *messages,
                  *zsets],
            args=[exchange.model_dump_json(), 0 if keep else self.unrated_ttl_s, exchange.id,
                  time.time(), exchange.adapter_version, exchange.tenant or "", len(messages)])
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
        await self._redis.sadd(k.tenants, k.tenant)
        return stored

    async def exists(self, exchange_id: str) -> bool:
        return bool(await self._redis.exists(self.keys.exchange(exchange_id)))

    async def get(self, exchange_id: str) -> Exchange:
        raw = await self._redis.get(self.keys.exchange(exchange_id))
        if raw is None:
            raise UnknownExchange(exchange_id)
        return Exchange.model_validate_json(raw)

    async def for_message(self, message_id: int) -> Exchange | None:
        """The exchange whose reply is this Discord message, if the bot still knows it."""
        exchange_id = await self._redis.get(self.keys.message(message_id))
        if exchange_id is None:
            return None
        try:
            return await self.get(exchange_id.decode())
        except UnknownExchange:
            return None

    async def get_many(self, ids: Iterable[str]) -> list[Exchange]:
        """The exchanges of these ids that still exist, in the same order."""
        ids = list(ids)
        if not ids:
            return []
        raws = await self._redis.mget([self.keys.exchange(i) for i in ids])
        return [Exchange.model_validate_json(raw) for raw in raws if raw is not None]

    # --- ratings and corrections --------------------------------------------------------------

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
        exchange, own, lifetime, messages = await self._indexes(exchange_id)
        k, moderator = self.keys, self.user_hash(moderator_id)
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

    # --- privacy and statistics -----------------------------------------------------------------

    async def forget_user(self, user_id: int | str) -> int:
        """Delete every exchange of this user (with its ratings and corrections, and their
        share of the counters); returns how many."""
        user_key = self.keys.user_exchanges(self.user_hash(user_id))
        ids = [i.decode() for i in await self._redis.zrange(user_key, 0, -1)]
        count = await self.forget(await self.get_many(ids))
        await self._redis.delete(user_key)
        return count

    async def forget(self, exchanges: Iterable[Exchange]) -> int:
        """Delete these exchanges wholly: ratings, corrections, their share of the counters,
        every index entry that finds them. Returns how many still existed."""
        exchanges = list(exchanges)
        if not exchanges:
            return 0
        k = self.keys
        async with self._redis.pipeline(transaction=False) as pipe:
            for exchange in exchanges:
                pipe.hkeys(k.ratings(exchange.id))
                pipe.hkeys(k.corrections(exchange.id))
            replies = await pipe.execute()
        count = 0
        for exchange, raters, teachers in zip(exchanges, replies[::2], replies[1::2],
                                              strict=True):
            own = k.of(exchange.tenant) if exchange.tenant is not None else None
            messages, zsets = self.lifetime_keys(exchange)
            moderators = [k.moderator_exchanges(h.decode()) for h in {*raters, *teachers}]
            count += int(await self._forget(
                keys=[k.exchange(exchange.id), k.ratings(exchange.id),
                      k.corrections(exchange.id), own.rated if own else "",
                      own.stats if own else "", *messages, *zsets, *moderators],
                args=[exchange.id, exchange.adapter_version, len(messages), len(zsets)]))
        return count

    async def replace(self, before: Exchange, raw: bytes, after: Exchange) -> bool:
        """Store `after` in place of `before` (read as `raw`), keeping its expiry; False when
        the stored exchange changed meanwhile (read it again) or is gone."""
        return bool(await self._replace(keys=[self.keys.exchange(before.id)],
                                        args=[raw, after.model_dump_json()]))

    async def drop_context(self, exchange_id: str, drop) -> int:
        """Remove the context turns for which `drop(turn)` is true from an exchange (and the
        index entries that pointed here for them); returns how many went."""
        for _ in range(REWRITE_ATTEMPTS):
            raw = await self._redis.get(self.keys.exchange(exchange_id))
            if raw is None:
                return 0
            exchange = Exchange.model_validate_json(raw)
            kept = [turn for turn in exchange.context if not drop(turn)]
            if len(kept) == len(exchange.context):
                return 0
            after = exchange.model_copy(update={"context": kept})
            if await self.replace(exchange, raw, after):
                break
        else:
            raise StoreError(f"exchange {exchange_id} kept changing; its context was not "
                             "cleaned")
        _, before_zsets = self.lifetime_keys(exchange)
        _, after_zsets = self.lifetime_keys(after)
        gone = set(before_zsets) - set(after_zsets)
        if gone:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in gone:
                    pipe.zrem(key, exchange_id)
                await pipe.execute()
        return len(exchange.context) - len(kept)

    async def reply_deleted(self, exchange: Exchange) -> bool:
        """The bot's reply of `exchange` was deleted in Discord: it leaves the training data
        (its tenant's rated index) and can no longer be rated through its messages; the record
        says so. False when it was gone already."""
        k = self.keys
        for _ in range(REWRITE_ATTEMPTS):
            raw = await self._redis.get(k.exchange(exchange.id))
            if raw is None:
                return False
            current = Exchange.model_validate_json(raw)
            if current.reply_deleted:
                break
            if await self.replace(current, raw, current.model_copy(
                    update={"reply_deleted": True})):
                break
        else:
            raise StoreError(f"exchange {exchange.id} kept changing; its deleted reply was "
                             "not recorded")
        messages, _ = self.lifetime_keys(current)
        async with self._redis.pipeline(transaction=True) as pipe:
            if current.tenant is not None:
                pipe.zrem(k.of(current.tenant).rated, current.id)
            if messages:
                pipe.delete(*messages)
            await pipe.execute()
        return True

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

    async def stats(self) -> dict:
        """This tenant's exchanges, ratings and positive share, overall and per adapter version,
        from the counters (no exchange is read, however many there are)."""
        raw = {key.decode(): int(value)
               for key, value in (await self._redis.hgetall(self.keys.stats)).items()}
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
