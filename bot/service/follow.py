"""Which adapter version serves each server, kept current from the registry.

A server (tenant) is served by its own active adapter, else by the default adapter (the active
one of the default tenant: the operator's choice, else HOME_GUILD_ID), else the base model.
`AdapterRouter` holds that table for one process (each request names the version it gives);
`follow()` keeps it current:

- at start-up it reads every tenant's active version and loads it into the generator; a version
  that cannot be served (damaged bytes, another base model, a failed check of
  bot/core/adapter_sanity.py) is skipped for the newest one in that tenant's history that
  loads, or the base model, with one log line;
- on every registry event it loads the tenant's new version first and only then serves it, so
  a swap or rollback fails no request, and a version that cannot be served never replaces one
  that can;
- a refused active version is kept as the tenant's refusal in the store (the version, the
  failed check, what serves instead; `/adapter status` reads it) and told to `on_change` as a
  "refused" event (the mod log) when it is news; it is cleared once the active version serves;
- a "cycle" event (a training cycle refused its candidate or held teachings) loads nothing and
  is passed on to `on_change` (the mod log says what the cycle learned);
- a "canary" event (a promoted adapter on trial started or ended, bot/core/store/canary.py)
  loads the canary, or drops it, and is passed on to `on_change`;
- a lost Redis connection is retried with backoff, and the table is read again.

Each read-load-serve step holds one lock: a command's refresh (`/adapter promote`) and the
follower's start-up run side by side, and a slow load of an older read must not overwrite a
newer one.

While a server has a canary, `version_for(tenant, conversation)` gives it to its share of
conversations: a hash of the conversation's id and the canary's version, so a conversation keeps
one version for its whole reply chain, in every process, and each canary draws its own share.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.core.generation import BASE_VERSION, AdapterLoadError, Generator
from bot.core.metrics import Metrics
from bot.core.store import AdapterCorrupt, AdapterEvent, AdapterRecord, Store, UnknownAdapter
from bot.core.store.canary import Canary
from bot.core.store.registry import Refusal

log = logging.getLogger(__name__)

OnChange = Callable[[AdapterEvent, AdapterRecord | None], Awaitable[None]]
# A version that cannot be served: logged and skipped.
_UNSERVABLE = (AdapterCorrupt, AdapterLoadError, UnknownAdapter)
_CONNECTION_LOST = (RedisConnectionError, RedisTimeoutError, OSError)
_RECONNECT_MAX_S = 30.0


class AdapterRouter:
    """The version serving each tenant in this process; see the module docstring."""

    def __init__(self, store: Store, generator: Generator, home_tenant: int | None = None,
                 metrics: Metrics | None = None):
        self.store, self.generator = store, generator
        self.metrics = metrics or Metrics()  # swaps, refusals, the versions served
        self.home_tenant = home_tenant
        self.default_tenant = home_tenant
        self._own: dict[int, str] = {}  # tenant -> its own version, as loaded here
        self._canary: dict[int, Canary] = {}  # tenant -> its canary, loaded here
        self._serving = asyncio.Lock()  # one read-load-serve step at a time (module docstring)
        self.ready = asyncio.Event()  # set once start_up has served every tenant

    def version_for(self, tenant: int | None, conversation: str | None = None) -> str:
        """The version that answers in `tenant` now (None, no server: the base model); with
        `conversation` (its id), the server's canary for its share of conversations."""
        if tenant is None:
            return BASE_VERSION
        canary = self._canary.get(tenant)
        if canary is not None and conversation is not None and serves_canary(
                conversation, canary.version, canary.share):
            return canary.version
        own = self._own.get(tenant, BASE_VERSION)
        if own != BASE_VERSION or self.default_tenant in (None, tenant):
            return own
        return self._own.get(self.default_tenant, BASE_VERSION)

    def canary(self, tenant: int) -> Canary | None:
        """The tenant's canary as served here (None: none, or it could not be loaded)."""
        return self._canary.get(tenant)

    async def refresh_canary(self, tenant: int) -> Canary | None:
        """Serve `tenant`'s canary if it has one that loads, else none."""
        async with self._serving:
            canary = await self.store.tenant(tenant).canary.current()
            if canary is not None:
                try:
                    await self._load(canary.version)
                except _UNSERVABLE as error:
                    log.error("canary %s of server %s cannot be served (%s); the active "
                              "adapter answers every conversation", canary.version, tenant,
                              error)
                    canary = None
            if canary is None:
                self._canary.pop(tenant, None)
            else:
                self._canary[tenant] = canary
            self._report_served()
        return canary

    def _report_served(self) -> None:
        """The versions this process answers with, canaries included, for the metrics."""
        canaries = (canary.version for canary in self._canary.values())
        self.metrics.serving([*self._own.values(), *canaries])

    def own_version(self, tenant: int) -> str:
        """The tenant's own adapter as served here (BASE_VERSION: none)."""
        return self._own.get(tenant, BASE_VERSION)

    async def refresh(self, tenant: int) -> str:
        """Serve `tenant`'s active version if it loads, else keep what serves it now; returns
        the tenant's own version now served. Raises what loading raised (AdapterCorrupt,
        AdapterLoadError, ...) when the active version cannot be served."""
        registry = self.store.tenant(tenant).registry
        async with self._serving:
            version = await registry.active()
            await self._load(version)
            self._own[tenant] = version
            await registry.clear_refusal()
            self._report_served()
        return version

    async def _load(self, version: str) -> None:
        if version != BASE_VERSION:
            # With its digest: a name reused after a Redis loss must not keep the old weights.
            record = await self.store.registry.record(version)
            await self.generator.load(version, sha256=record.sha256)

    async def start_up(self, on_change: OnChange | None = None) -> None:
        """Read the default tenant and every tenant's version (see the module docstring)."""
        self.default_tenant = await self.store.registry.default_tenant() or self.home_tenant
        for tenant in await self.store.tenants():
            await self._start_tenant(tenant, on_change)
            await self.refresh_canary(tenant)
        self._report_served()
        self.ready.set()

    async def _start_tenant(self, tenant: int, on_change: OnChange | None) -> None:
        registry = self.store.tenant(tenant).registry
        async with self._serving:
            active = await registry.active()
            refused = await self._serve_first_loadable(tenant, active)
        if refused is None:
            await registry.clear_refusal()
        else:
            await self._refused(tenant, active, refused, on_change)

    async def _serve_first_loadable(self, tenant: int, active: str) -> Exception | None:
        """Serve `active`, else the newest loadable one before it, else the base model;
        returns why `active` was not served (None: it was)."""
        refused: Exception | None = None
        for version in [active, *await self.store.tenant(tenant).registry.history(),
                        BASE_VERSION]:
            try:
                await self._load(version)
            except _UNSERVABLE as error:
                log.error("adapter %s of server %s cannot be served (%s); trying the one "
                          "before it", version, tenant, error)
                refused = refused or error
                continue
            self._own[tenant] = version
            if version != active:
                log.error("server %s is served by %s instead of its active adapter %s",
                          tenant, version, active)
            return refused
        return refused

    async def _refused(self, tenant: int, version: str, error: Exception,
                       on_change: OnChange | None) -> None:
        """Keep the tenant's refusal of `version`; tell `on_change` when it is news."""
        self.metrics.adapter_refusals.inc()
        refusal = Refusal(version=version, check=getattr(error, "check", None) or str(error),
                          serving=self.version_for(tenant))
        if await self.store.tenant(tenant).registry.record_refusal(refusal):
            await _notify(self.store, on_change, AdapterEvent(
                kind="refused", tenant=tenant, version=version, previous=refusal.serving,
                reason=refusal.check))

    async def follow(self, on_change: OnChange | None = None) -> None:
        """Run until cancelled: start up, then apply every adapter event (module docstring).

        `on_change(event, record or None)` is awaited after each change this process served,
        and with a "refused" event (record None) for each new refusal and each "cycle" event
        (record None).
        """
        delay = 1.0
        while True:
            subscribed = asyncio.Event()
            try:
                await self._follow_once(on_change, subscribed)
            except _CONNECTION_LOST as error:
                if subscribed.is_set():  # it had worked: start the backoff afresh
                    delay = 1.0
                log.warning("lost the adapter event subscription (%s); retrying in %.0f s",
                            error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX_S)

    async def _follow_once(self, on_change: OnChange | None,
                           subscribed: asyncio.Event) -> None:
        events = self.store.registry.events(subscribed=subscribed)
        pending = asyncio.ensure_future(anext(events))  # runs the subscription to its 1st event
        try:
            waiter = asyncio.ensure_future(subscribed.wait())
            await asyncio.wait({pending, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if pending.done() and pending.exception() is not None:
                raise pending.exception()  # subscribing failed
            await self.start_up(on_change)  # after subscribing: no change is missed
            while True:
                event = await pending
                pending = asyncio.ensure_future(anext(events))
                log.info("adapter event: %s %s for server %s (was %s)", event.kind,
                         event.version, event.tenant, event.previous)
                if await self._apply(event, on_change):
                    await _notify(self.store, on_change, event)
        finally:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                await pending
            await events.aclose()

    async def _apply(self, event: AdapterEvent, on_change: OnChange | None = None) -> bool:
        """Serve what the event changed; True when this process now serves its version."""
        if event.kind == "default":
            self.default_tenant = event.tenant
            return False
        if event.kind == "cycle":
            return event.tenant is not None  # nothing to load: passed on to the mod log
        if event.tenant is None:
            return False
        if event.kind == "canary":
            await self.refresh_canary(event.tenant)
            return True
        before = self.own_version(event.tenant)
        try:
            now = await self.refresh(event.tenant)
        except _CONNECTION_LOST:
            raise
        except _UNSERVABLE as error:
            log.error("adapter %s cannot be served, server %s keeps %s: %s", event.version,
                      event.tenant, before, error)
            await self._refused(event.tenant, event.version, error, on_change)
            return False
        except Exception:  # an unforeseen loader failure must not stop the follower
            log.exception("loading adapter %s failed, server %s keeps %s", event.version,
                          event.tenant, before)
            return False
        if now != before:
            self.metrics.adapter_swaps.inc()
        # An event superseded by a newer change is not announced: the newer one has its own.
        return now == event.version and now != before


async def _notify(store: Store, on_change: OnChange | None, event: AdapterEvent) -> None:
    if on_change is None:
        return
    version = event.version
    try:
        record = (None if version == BASE_VERSION or event.kind in ("refused", "cycle")
                  else await store.registry.record(version))
        await on_change(event, record)
    except Exception:  # a failing notification must not stop the bot following the registry
        log.exception("on_change callback failed for adapter %s", version)


def serves_canary(conversation: str, version: str, share: float) -> bool:
    """Whether the canary `version` answers `conversation`: the same for every reply of that
    conversation and in every process (a hash, not a random draw)."""
    digest = hashlib.sha256(f"{version}:{conversation}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < share
