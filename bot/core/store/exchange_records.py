"""Exchange records: storing, finding, rewriting and forgetting them, and the counters /stats
reads.

An exchange is one user message and the bot's reply. It expires after UNRATED_TTL_DAYS unless
a rating or a correction keeps it (training data is kept). Every write that touches more than
one key runs as one Lua script (bot/core/store/scripts.py), so a failure leaves nothing half.
Ratings and corrections build on these records in exchanges.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis

from bot.core.store import scripts
from bot.core.store.keys import RECENT_KEPT, RECENT_S, Keys
from bot.core.store.records import Exchange, OtherTenant, StoreError, UnknownExchange

REWRITE_ATTEMPTS = 5  # compare-and-set rewrites of an exchange that others change meanwhile


class ExchangeRecords:
    """Exchanges by id or message, their indexes and expiry, and this tenant's counters."""

    def __init__(self, client: aioredis.Redis, keys: Keys, user_hash: Callable[[object], str],
                 unrated_ttl_s: int):
        self._redis, self.keys, self.user_hash = client, keys, user_hash
        self.unrated_ttl_s = unrated_ttl_s
        self._add = client.register_script(scripts.ADD_EXCHANGE)
        self._forget = client.register_script(scripts.FORGET_EXCHANGE)
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
        if exchange.tenant is not None:
            own = k.of(exchange.tenant)
            zsets += [own.channel_exchanges(c) for c in (exchange.channel_id, exchange.parent_id)
                      if c is not None]
        return messages, zsets

    # --- exchanges --------------------------------------------------------------------------------

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
            keys=[k.exchange(exchange.id), own.stats if own else "", k.tenants,
                  own.recent_exchanges if own else "", *messages, *zsets],
            args=[exchange.model_dump_json(), 0 if keep else self.unrated_ttl_s, exchange.id,
                  time.time(), exchange.adapter_version, exchange.tenant or "", len(messages),
                  RECENT_S, RECENT_KEPT])
        return exchange

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

    async def recent(self, since: float) -> list[Exchange]:
        """This tenant's exchanges stored since `since` (a Unix time; at most RECENT_S back and
        the newest RECENT_KEPT), oldest first."""
        ids = [i.decode() for i in await self._redis.zrangebyscore(
            self.keys.recent_exchanges, since, "+inf")]
        return await self.get_many(ids)

    async def in_channel(self, channel_id: int) -> list[str]:
        """The ids of this tenant's exchanges said in that channel or thread (or its threads).
        """
        key = self.keys.channel_exchanges(channel_id)
        return [i.decode() for i in await self._redis.zrange(key, 0, -1)]

    # --- forgetting and rewriting -----------------------------------------------------------------

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
            if own is not None:
                zsets.append(own.recent_exchanges)
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

    # --- statistics -------------------------------------------------------------------------------

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
