"""One runtime for every process that serves: it builds and wires every object once.

    async with Runtime(settings) as runtime:
        runtime.store, runtime.generator, runtime.router, runtime.conversation,
        runtime.actions, runtime.cooldowns, runtime.deletions, runtime.metrics
        runtime.on_change(callback)    # called after each adapter change this process swapped in

Entering connects to Redis (checking the schema and its eviction policy, moving old data
once), runs the front end's `preflight` (the Discord login), finds MODEL_NAME (one clear line
when it is missing; bot/core/model_source.py), loads the model off the event loop with the
registry as its adapter source (GENERATOR=ray: connects to the inference workers instead,
bot/fleet/remote.py), starts it, loads every server's adapter and starts following
the registry; with METRICS_PORT set it serves its Prometheus metrics (bot/core/metrics.py)
meanwhile. Leaving stops them in reverse order. The Discord bot, the
console and the demo all run inside one and build none of these themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.core.generation import AdapterSource, Generator
from bot.core.metrics import Metrics
from bot.core.model_source import ensure_model
from bot.core.store import Store
from bot.service.actions import Actions
from bot.service.conversation import Conversation
from bot.service.cooldowns import Cooldowns
from bot.service.deletions import Deletions
from bot.service.follow import AdapterRouter, OnChange

log = logging.getLogger(__name__)


def load_engine(settings, adapter_source: AdapterSource) -> Generator:
    """The local engine for MODEL_NAME (imports torch, so only when a process generates), or
    with GENERATOR=ray the inference workers on Ray Serve (imports ray only then)."""
    if settings.generator == "ray":
        from bot.fleet.remote import RemoteConfig, RemoteGenerator

        return RemoteGenerator(RemoteConfig.from_settings(settings), adapter_source)
    from bot.core.generation import GenerationConfig
    from bot.engine.engine import Engine

    return Engine.load_model(GenerationConfig.from_settings(settings), adapter_source)


class Runtime:
    """See the module docstring. `store` or `generator` given here are used as they are and
    left open at the end (their owner closes them); a given generator takes its adapters from
    the store's registry (`store.registry.blob`)."""

    def __init__(self, settings, *, store: Store | None = None,
                 generator: Generator | None = None,
                 preflight: Callable[[], Awaitable[None]] | None = None):
        self.settings = settings
        self._preflight = preflight  # cheap checks that must not wait for the model load
        self._given_store, self._given_generator = store, generator
        self._listeners: list[OnChange] = []
        self._follower: asyncio.Task | None = None
        self.store: Store | None = None
        self.generator: Generator | None = None
        self.router: AdapterRouter | None = None
        self.conversation: Conversation | None = None
        self.actions: Actions | None = None
        self.cooldowns: Cooldowns | None = None
        self.deletions: Deletions | None = None
        self.metrics = Metrics()
        self._metrics_server = None

    def on_change(self, callback: OnChange) -> None:
        self._listeners.append(callback)

    async def __aenter__(self) -> Runtime:
        try:
            self._metrics_server = self.metrics.serve(self.settings.metrics_port)
            self.store = self._given_store or Store.from_settings(self.settings)
            await self.store.ping()
            if self._preflight is not None:
                await self._preflight()
            if self._given_generator is None and self.settings.generator == "local":
                await asyncio.to_thread(ensure_model, self.settings.model_name)
            self.generator = self._given_generator or await asyncio.to_thread(
                load_engine, self.settings, self.store.registry.blob)
            await self.generator.start()
            if hasattr(self.generator, "use_metrics"):
                self.generator.use_metrics(self.metrics)
            self._wire(self.store, self.generator)
            self._follower = asyncio.create_task(self.router.follow(self._announce),
                                                 name="adapter-follower")
            await self._started_up()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self._close()

    def _wire(self, store: Store, generator: Generator) -> None:
        settings = self.settings
        self.router = AdapterRouter(store, generator, settings.home_guild_id, self.metrics)
        self.deletions = Deletions(store)
        self.cooldowns = Cooldowns(store, settings.cooldown_seconds)
        self.conversation = Conversation(settings, store, generator, self.router,
                                         self.deletions)
        self.actions = Actions(settings, store, generator, self.router, self.metrics)

    async def _started_up(self) -> None:
        """Wait until the follower served every server's adapter once (or failed trying)."""
        ready = asyncio.ensure_future(self.router.ready.wait())
        await asyncio.wait({ready, self._follower}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._follower.done():
            self._follower.result()  # raises what stopped it

    async def _stop_follower(self) -> None:
        # A cancellation can be lost inside a library: Python 3.11's asyncio.wait_for (redis-py
        # connects with it) drops one that arrives as its inner call finishes. Ask again.
        while not self._follower.done():
            self._follower.cancel()
            await asyncio.wait({self._follower}, timeout=1.0)
        with contextlib.suppress(asyncio.CancelledError):
            await self._follower

    async def _announce(self, event, record) -> None:
        for listener in self._listeners:
            await listener(event, record)

    async def _close(self) -> None:
        if self._follower is not None:
            await self._stop_follower()
            self._follower = None
        if self.generator is not None and self._given_generator is None:
            await self.generator.close()
        if self.store is not None and self._given_store is None:
            await self.store.close()
        self.metrics.close(self._metrics_server)
        self._metrics_server = None
