"""The adapter registry: versions with their bytes, records and reports, and active pointers.

A version is saved first (bytes + record, checked by sha256 on every read) and activated
separately, so nothing serves a version before it is complete. Versions are unique across
tenants; each tenant (server) has its own active pointer and history, moved only by a
`Registry` scoped to it (store.tenant(id).registry). Moving a pointer (activate, rollback) is one
Lua script that also publishes the change, so every bot process hears it. When a bot refuses
the active version (it fails a check, bot/core/adapter_sanity.py), the tenant's `Refusal` is
kept here until the active version serves, so `/adapter status` can say so.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from bot.core.generation import BASE_VERSION
from bot.core.store import scripts
from bot.core.store.keys import Keys
from bot.core.store.records import (
    ActiveChanged,
    AdapterCorrupt,
    AdapterEvent,
    AdapterRecord,
    OtherTenant,
    StoreError,
    UnknownAdapter,
)


class Refusal(BaseModel):
    """A version a bot would not serve: the check it failed and what serves instead."""

    version: str
    check: str  # the failed check's name ("non-finite weights", ...) or the load error
    serving: str
    at: float = Field(default_factory=time.time)


class Registry:
    def __init__(self, client: aioredis.Redis, keys: Keys):
        self._redis, self.keys = client, keys
        self._activate = client.register_script(scripts.ACTIVATE)
        self._rollback = client.register_script(scripts.ROLLBACK)

    # --- versions -----------------------------------------------------------------------------

    async def save(self, record: AdapterRecord, blob: bytes) -> AdapterRecord:
        """Store an adapter's bytes and record under a new version for this tenant; does not
        activate it."""
        if not blob:
            raise StoreError("an adapter needs its safetensors bytes")
        self._tenant()
        number = await self._redis.incr(self.keys.adapter_seq)
        record = record.model_copy(update={"version": f"v{number}", "tenant": self.keys.tenant,
                                           "sha256": hashlib.sha256(blob).hexdigest(),
                                           "size_bytes": len(blob)})
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.adapter(record.version, "blob"), blob)
            pipe.set(self.keys.adapter(record.version, "meta"), record.model_dump_json())
            pipe.zadd(self.keys.adapters, {record.version: record.created_at})
            pipe.sadd(self.keys.tenants, self.keys.tenant)
            await pipe.execute()
        return record

    def _tenant(self) -> int:
        if self.keys.tenant is None:
            raise StoreError("this registry act needs a server (store.tenant(id).registry)")
        return self.keys.tenant

    async def record(self, version: str) -> AdapterRecord:
        raw = await self._redis.get(self.keys.adapter(version, "meta"))
        if raw is None:
            raise UnknownAdapter(version)
        return AdapterRecord.model_validate_json(raw)

    async def blob(self, version: str) -> bytes:
        """The adapter's safetensors bytes, refused when they do not match their sha256."""
        record = await self.record(version)
        blob = await self._redis.get(self.keys.adapter(version, "blob"))
        if blob is None:
            raise AdapterCorrupt(f"adapter {version} has metadata but no bytes")
        digest = hashlib.sha256(blob).hexdigest()
        if digest != record.sha256:
            raise AdapterCorrupt(f"adapter {version} bytes do not match their sha256 "
                                 f"({digest[:12]}… != {record.sha256[:12]}…)")
        return blob

    async def records(self) -> list[AdapterRecord]:
        """Every version trained for this tenant, oldest first."""
        versions = [v.decode() for v in await self._redis.zrange(self.keys.adapters, 0, -1)]
        if not versions:
            return []
        raws = await self._redis.mget([self.keys.adapter(v, "meta") for v in versions])
        return [AdapterRecord.model_validate_json(raw) for raw in raws if raw is not None]

    # --- the active pointer -----------------------------------------------------------------

    async def active(self) -> str:
        """The version serving this tenant (BASE_VERSION: none of its own)."""
        raw = await self._redis.get(self.keys.active)
        return raw.decode() if raw is not None else BASE_VERSION

    async def history(self) -> list[str]:
        """Versions that were active before, newest first (where a rollback goes)."""
        return [v.decode() for v in await self._redis.lrange(self.keys.history, 0, -1)]

    async def activate(self, version: str, *, expected: str | None = None) -> str:
        """Make `version` active (atomically, announcing it); returns the previous version.

        With `expected`, the pointer moves only if it still points there (else StoreError).
        """
        tenant = self._tenant()
        if version != BASE_VERSION and (await self.record(version)).tenant != tenant:
            raise OtherTenant(f"adapter {version} was trained for another server")
        event = AdapterEvent(kind="activated", tenant=tenant, version=version,
                             previous="__PREVIOUS__")
        keys = [self.keys.active, self.keys.history, self.keys.adapter_events]
        try:
            previous = await self._activate(keys=keys, args=[version, expected or "",
                                                             event.model_dump_json()])
        except aioredis.ResponseError as error:
            if "ACTIVE_CHANGED" in str(error):
                raise ActiveChanged(f"the active adapter changed meanwhile ({error}); "
                                    "nothing was swapped") from None
            raise
        return previous.decode()

    async def rollback(self, *, expected: tuple[str, str] | None = None) -> AdapterEvent:
        """Return to the previously active version; the change made, as announced.

        With `expected` = (target, current), the pointer moves only if the previous version is
        still `target` and the active one still `current` (else ActiveChanged).
        """
        tenant = self._tenant()
        event = AdapterEvent(kind="rollback", tenant=tenant, version="__VERSION__",
                             previous="__PREVIOUS__")
        keys = [self.keys.active, self.keys.history, self.keys.adapter_events]
        target, current = expected or ("", "")
        try:
            version, previous = await self._rollback(
                keys=keys, args=[event.model_dump_json(), target, current])
        except aioredis.ResponseError as error:
            if "NO_HISTORY" in str(error):
                raise StoreError("there is no earlier adapter to roll back to") from None
            if "ACTIVE_CHANGED" in str(error):
                raise ActiveChanged(f"the adapters changed meanwhile ({error}); nothing was "
                                    "rolled back") from None
            raise
        return AdapterEvent(kind="rollback", tenant=tenant, version=version.decode(),
                            previous=previous.decode())

    # --- refusals -----------------------------------------------------------------------------

    async def record_refusal(self, refusal: Refusal) -> bool:
        """Keep `refusal` as this tenant's; True when it is news (not the one kept already)."""
        before = await self._redis.set(self.keys.refused, refusal.model_dump_json(), get=True)
        if before is None:
            return True
        kept = Refusal.model_validate_json(before)
        return (kept.version, kept.check, kept.serving) != (refusal.version, refusal.check,
                                                            refusal.serving)

    async def refusal(self) -> Refusal | None:
        raw = await self._redis.get(self.keys.refused)
        return None if raw is None else Refusal.model_validate_json(raw)

    async def clear_refusal(self) -> None:
        await self._redis.delete(self.keys.refused)

    # --- reports ------------------------------------------------------------------------------

    async def save_report(self, version: str, report: dict, png: bytes | None = None) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.adapter(version, "report"), json.dumps(report))
            if png is not None:
                pipe.set(self.keys.adapter(version, "plot"), png)
            await pipe.execute()

    async def report(self, version: str) -> tuple[dict | None, bytes | None]:
        raw, png = await self._redis.mget([self.keys.adapter(version, "report"),
                                      self.keys.adapter(version, "plot")])
        return (json.loads(raw) if raw is not None else None), png

    # --- the default adapter -----------------------------------------------------------------

    async def default_tenant(self) -> int | None:
        """The tenant whose active adapter serves tenants without one (None: not set here)."""
        raw = await self._redis.get(self.keys.default_tenant)
        return int(raw) if raw is not None else None

    async def set_default_tenant(self, tenant: int) -> None:
        """Make `tenant`'s active adapter the default, and announce it to every bot."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.default_tenant, tenant)
            event = AdapterEvent(kind="default", tenant=tenant, version="", previous="")
            pipe.publish(self.keys.adapter_events, event.model_dump_json())
            await pipe.execute()

    # --- change events ------------------------------------------------------------------------

    async def announce_cycle(self, run: dict) -> None:
        """Tell every bot that a training cycle of this tenant ended as `run` (its record in
        recent runs) without moving the active pointer, so the mod log can say what it learned,
        held or refused."""
        event = AdapterEvent(kind="cycle", tenant=self._tenant(), version=await self.active(),
                             previous=str(run["at"]), reason=run.get("outcome"))
        await self._redis.publish(self.keys.adapter_events, event.model_dump_json())

    async def events(self, subscribed: asyncio.Event | None = None
                     ) -> AsyncIterator[AdapterEvent]:
        """Adapter changes as they are published (subscribe before reading the active one).

        `subscribed` is set once the subscription is in place, so a caller can read the active
        version after that without missing a change made in between.
        """
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(self.keys.adapter_events)
        if subscribed is not None:
            subscribed.set()
        try:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    yield AdapterEvent.model_validate_json(message["data"])
        finally:
            await pubsub.aclose()
