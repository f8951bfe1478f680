"""Moderator trust of one server: distrusted moderators, the review queue, the exam pins.

The trainer decides what trains (trainer/trust.py); this part keeps what admins decide about
it. A distrusted moderator's ratings and teachings stay in the store (an admin may trust them
again) but no cycle trains on them. Teachings the trainer held wait in the review queue until
an admin approves (they train from the next cycle) or rejects them (never held again). The exam
pins are exchanges an admin pinned as references of the gate's fixed exam set.

Moderators are named by their user hash, as ratings and corrections record them. A distrusted
hash stays after that moderator's `/forget me` (their data goes; the admins' decision about
them does not), so forgetting cannot undo a distrust.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from bot.core.store import scripts
from bot.core.store.keys import Keys
from bot.core.store.records import (
    Exchange,
    HeldItem,
    OtherTenant,
    StoreError,
    UnknownExchange,
    UnknownHeldItem,
)


@dataclass(frozen=True)
class TrustState:
    """What a training cycle needs of the admins' decisions."""

    distrusted: frozenset[str] = frozenset()  # moderator hashes
    decisions: dict[str, str] = field(default_factory=dict)  # held item id -> approved|rejected


class Trust:
    """One tenant's trust data (store.tenant(id).trust)."""

    def __init__(self, client: aioredis.Redis, keys: Keys, user_hash: Callable[[object], str]):
        self._redis, self.keys, self.user_hash = client, keys, user_hash
        self._hold = client.register_script(scripts.HOLD)
        self._decide = client.register_script(scripts.DECIDE)

    # --- distrusted moderators ------------------------------------------------------------

    async def distrust(self, moderator_id: int | str) -> bool:
        """Take this moderator's ratings and teachings out of training from the next cycle;
        False when they were distrusted already."""
        return bool(await self._redis.sadd(self.keys.distrusted, self.user_hash(moderator_id)))

    async def trust(self, moderator_id: int | str) -> bool:
        """Count this moderator again; False when they were not distrusted."""
        return bool(await self._redis.srem(self.keys.distrusted, self.user_hash(moderator_id)))

    async def distrusted(self) -> frozenset[str]:
        return frozenset(h.decode() for h in await self._redis.smembers(self.keys.distrusted))

    # --- the review queue -----------------------------------------------------------------

    async def hold(self, items: Iterable[HeldItem]) -> int:
        """Queue these items for review; one held before (pending or decided) stays as it
        is. Returns how many were queued now."""
        args: list = []
        for item in items:
            args += [item.id, item.model_dump_json(), item.held_at]
        if not args:
            return 0
        return int(await self._hold(keys=[self.keys.review("items"),
                                          self.keys.review("pending")], args=args))

    async def pending(self, limit: int | None = None) -> list[HeldItem]:
        """The review queue, oldest first (up to `limit`). Items whose exchange is gone
        (forgotten, or its server wiped) leave the queue here."""
        end = -1 if limit is None else limit - 1
        ids = [i.decode() for i in await self._redis.zrange(self.keys.review("pending"), 0, end)]
        if not ids:
            return []
        raws = await self._redis.hmget(self.keys.review("items"), ids)
        queued = {i: HeldItem.model_validate_json(raw) for i, raw in zip(ids, raws, strict=True)
                  if raw is not None}
        alive = await self._existing({item.exchange_id for item in queued.values()})
        gone = [i for i in ids if i not in queued or queued[i].exchange_id not in alive]
        if gone:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keys.review("pending"), *gone)
                pipe.hdel(self.keys.review("items"), *gone)
                await pipe.execute()
        return [item for item in queued.values() if item.exchange_id in alive]

    async def item(self, item_id: str) -> HeldItem:
        raw = await self._redis.hget(self.keys.review("items"), item_id)
        if raw is None:
            raise UnknownHeldItem(item_id)
        return HeldItem.model_validate_json(raw)

    async def approve(self, item_id: str) -> HeldItem:
        """Let a held item train from the next cycle."""
        return await self._decided(item_id, "approved")

    async def reject(self, item_id: str) -> HeldItem:
        """Keep a held item out of training for good."""
        return await self._decided(item_id, "rejected")

    async def _decided(self, item_id: str, status: str) -> HeldItem:
        held = await self.item(item_id)
        if held.status != "pending":
            raise StoreError(f"held item {item_id} was {held.status} already")
        decided = held.model_copy(update={"status": status, "decided_at": time.time()})
        if not await self._decide(keys=[self.keys.review("items"), self.keys.review("pending")],
                                  args=[item_id, decided.model_dump_json()]):
            raise StoreError(f"held item {item_id} was decided meanwhile")
        return decided

    async def state(self) -> TrustState:
        """The distrusted moderators and every decided item, for a training cycle."""
        raws = await self._redis.hvals(self.keys.review("items"))
        decided = (HeldItem.model_validate_json(raw) for raw in raws)
        return TrustState(distrusted=await self.distrusted(),
                          decisions={i.id: i.status for i in decided if i.status != "pending"})

    async def forget_moderator(self, moderator_hash: str) -> int:
        """Remove every held item of this moderator (their words); returns how many."""
        raws = await self._redis.hgetall(self.keys.review("items"))
        mine = [item_id for item_id, raw in raws.items()
                if HeldItem.model_validate_json(raw).moderator_hash == moderator_hash]
        if mine:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.review("items"), *mine)
                pipe.zrem(self.keys.review("pending"), *mine)
                await pipe.execute()
        return len(mine)

    # --- the exam pins --------------------------------------------------------------------

    async def pin_exam(self, exchange_id: str) -> bool:
        """Pin an exchange of this server to the exam set; False when pinned already."""
        raw = await self._redis.get(self.keys.exchange(exchange_id))
        if raw is None:
            raise UnknownExchange(exchange_id)
        if Exchange.model_validate_json(raw).tenant != self.keys.tenant:
            raise OtherTenant("that reply belongs to another server")
        return bool(await self._redis.zadd(self.keys.exam_pins, {exchange_id: time.time()},
                                      nx=True))

    async def unpin_exam(self, exchange_id: str) -> bool:
        return bool(await self._redis.zrem(self.keys.exam_pins, exchange_id))

    async def exam_pins(self) -> list[str]:
        """The pinned exchanges that still exist, oldest pin first."""
        ids = [i.decode() for i in await self._redis.zrange(self.keys.exam_pins, 0, -1)]
        alive = await self._existing(ids)
        return [i for i in ids if i in alive]

    async def _existing(self, exchange_ids: Iterable[str]) -> set[str]:
        ids = list(exchange_ids)
        if not ids:
            return set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for exchange_id in ids:
                pipe.exists(self.keys.exchange(exchange_id))
            found = await pipe.execute()
        return {i for i, there in zip(ids, found, strict=True) if there}
