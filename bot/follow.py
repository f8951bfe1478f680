"""Keep the engine serving the registry's active adapter: at start-up and on every change."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.generation import BASE_VERSION, AdapterLoadError, Generator
from bot.store import AdapterCorrupt, AdapterEvent, AdapterRecord, Store, UnknownAdapter

log = logging.getLogger(__name__)

OnChange = Callable[[AdapterEvent, AdapterRecord | None], Awaitable[None]]
# A version that cannot be served: logged and skipped, the engine keeps what it has.
_UNSERVABLE = (AdapterCorrupt, AdapterLoadError, UnknownAdapter)
_CONNECTION_LOST = (RedisConnectionError, RedisTimeoutError, OSError)
_RECONNECT_MAX_S = 30.0


async def sync_active(store: Store, engine: Generator) -> str:
    """Swap the engine to the registry's active version now (if it is not serving it already);
    returns that version. Raises what loading it raised (AdapterCorrupt, AdapterLoadError, ...)."""
    version = await store.registry.active()
    await swap_to(store, engine, version)
    return version


async def swap_to(store: Store, engine: Generator, version: str) -> None:
    """Serve `version` (its bytes checked by sha256, then loaded); raises AdapterCorrupt,
    AdapterLoadError or UnknownAdapter when it cannot be served, leaving the engine as it was."""
    if engine.active_version != version:
        blob = None if version == BASE_VERSION else await store.registry.blob(version)
        await engine.swap(version, blob)


async def serve_best(store: Store, engine: Generator, unservable: set[str] | None = None) -> str:
    """At start-up: serve the active version or, when it cannot be served (damaged bytes,
    another base model), the newest version in the history that can, else the base model.

    One log line says what is served (and why, when it is not the active version); the
    version that failed goes into `unservable`, so the follower does not log it again.
    Returns the version served. Only a lost Redis connection is raised.
    """
    active = await store.registry.active()
    why = await _try_serving(store, engine, active)
    if why is None:
        log.info("serving adapter %s", active)
        return active
    if unservable is not None:
        unservable.add(active)
    tried = {active}
    for version in [*await store.registry.history(), BASE_VERSION]:
        if version in tried:
            continue
        tried.add(version)
        if await _try_serving(store, engine, version) is None:
            log.error("active adapter %s cannot be served (%s); serving %s, the newest "
                      "version before it that loads, and following the registry",
                      active, why, version)
            return version
    return engine.active_version  # not reached: the base model always serves


async def _try_serving(store: Store, engine: Generator, version: str) -> str | None:
    """None when the engine now serves `version`, else why it cannot."""
    try:
        await swap_to(store, engine, version)
    except _UNSERVABLE as error:
        return str(error)
    except _CONNECTION_LOST:
        raise
    except Exception as error:  # an unforeseen loader failure: that version is not served
        log.debug("loading adapter %s failed", version, exc_info=True)
        return f"{type(error).__name__}: {error}"
    return None


async def _swap_or_skip(store: Store, engine: Generator, version: str,
                        unservable: set[str] | None = None) -> bool:
    """Serve `version`, or log why it cannot be served (once per version when `unservable`
    is given); True when the engine moved to it."""
    before = engine.active_version
    why = await _try_serving(store, engine, version)
    if why is not None:
        if unservable is None or version not in unservable:
            log.error("adapter %s cannot be served, still serving %s: %s", version, before, why)
        if unservable is not None:
            unservable.add(version)
        return False
    if unservable is not None:
        unservable.discard(version)
    return engine.active_version != before


async def follow_registry(store: Store, engine: Generator, on_change: OnChange | None = None,
                          unservable: set[str] | None = None) -> None:
    """Run until cancelled: serve the active version, and follow every adapter event.

    The subscription is in place before the active version is read, so a change made during
    start-up is not missed. An event whose version is no longer the active one is skipped (the
    newer change has its own event), so a burst of changes loads only the newest.
    `on_change(event, record or None)` is awaited after each successful swap an event caused.
    A lost Redis connection is retried with backoff, and the active version is read again.
    A version that cannot be served is logged once when `unservable` (shared with serve_best)
    is given, however often the follower meets it again.
    """
    delay = 1.0
    while True:
        subscribed = asyncio.Event()
        try:
            await _follow_once(store, engine, on_change, subscribed, unservable)
        except _CONNECTION_LOST as error:
            if subscribed.is_set():  # it had worked: start the backoff afresh
                delay = 1.0
            log.warning("lost the adapter event subscription (%s); retrying in %.0f s",
                        error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_S)


async def _follow_once(store: Store, engine: Generator, on_change: OnChange | None,
                       subscribed: asyncio.Event, unservable: set[str] | None) -> None:
    events = store.registry.events(subscribed=subscribed)
    pending = asyncio.ensure_future(anext(events))  # runs the subscription up to its 1st event
    try:
        waiter = asyncio.ensure_future(subscribed.wait())
        await asyncio.wait({pending, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if pending.done() and pending.exception() is not None:
            raise pending.exception()  # subscribing failed
        await _swap_or_skip(store, engine, await store.registry.active(), unservable)
        while True:
            event = await pending
            pending = asyncio.ensure_future(anext(events))
            log.info("adapter event: %s %s (was %s)", event.kind, event.version, event.previous)
            if event.version != await store.registry.active():
                continue  # already superseded: the newer change has its own event
            if await _swap_or_skip(store, engine, event.version, unservable):
                await _notify(store, on_change, event)
    finally:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
            await pending
        await events.aclose()


async def _notify(store: Store, on_change: OnChange | None, event: AdapterEvent) -> None:
    if on_change is None:
        return
    version = event.version
    try:
        record = None if version == BASE_VERSION else await store.registry.record(version)
        await on_change(event, record)
    except Exception:  # a failing notification must not stop the bot following the registry
        log.exception("on_change callback failed for adapter %s", version)
