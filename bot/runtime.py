"""One runtime for every process that serves: store, generator and the registry follower.

    async with Runtime(settings) as runtime:
        runtime.store, runtime.generator, runtime.serving, runtime.conversation, runtime.actions
        runtime.on_change(callback)    # called after each adapter change this process swapped in

Entering connects to Redis (checking the schema, moving old data once), loads the model off the
event loop, starts the generator (it fetches adapters it has not loaded from the registry),
loads every server's adapter and starts following the registry; leaving stops them in reverse
order. The Discord bot, the console and the demo all run inside one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bot.core.generation import AdapterSource, Generator
from bot.core.store import Store
from bot.service.actions import Actions
from bot.service.conversation import Conversation
from bot.service.follow import OnChange, Serving

log = logging.getLogger(__name__)


def load_engine(settings, adapter_source: AdapterSource) -> Generator:
    """The local engine for MODEL_NAME (imports torch, so only when a process generates)."""
    from bot.core.generation import GenerationConfig
    from bot.engine.engine import Engine

    engine = Engine.load_model(GenerationConfig.from_settings(settings))
    engine.adapter_source = adapter_source
    return engine


class Runtime:
    """See the module docstring. `store` or `generator` given here are used as they are and
    left open at the end (their owner closes them)."""

    def __init__(self, settings, *, store: Store | None = None,
                 generator: Generator | None = None, follow: bool = True):
        self.settings = settings
        self._given_store, self._given_generator = store, generator
        self._follow = follow
        self._listeners: list[OnChange] = []
        self._follower: asyncio.Task | None = None
        self.store: Store | None = None
        self.generator: Generator | None = None
        self.serving: Serving | None = None
        self.conversation: Conversation | None = None
        self.actions: Actions | None = None

    def on_change(self, callback: OnChange) -> None:
        self._listeners.append(callback)

    async def __aenter__(self) -> Runtime:
        try:
            self.store = self._given_store or Store.from_settings(self.settings)
            await self.store.ping()
            self.generator = self._given_generator or await asyncio.to_thread(
                load_engine, self.settings, self.store.registry.blob)
            if getattr(self.generator, "adapter_source", False) is None:
                self.generator.adapter_source = self.store.registry.blob
            await self.generator.start()
            self.serving = Serving(self.store, self.generator, self.settings.home_guild_id)
            self.conversation = Conversation(self.settings, self.store, self.generator,
                                             self.serving)
            self.actions = Actions(self.settings, self.store, self.generator, self.serving)
            if self._follow:
                self._follower = asyncio.create_task(self.serving.follow(self._announce),
                                                     name="adapter-follower")
                await self._started_up()
            else:
                await self.serving.start_up()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self._close()

    async def _started_up(self) -> None:
        """Wait until the follower served every server's adapter once (or failed trying)."""
        ready = asyncio.ensure_future(self.serving.ready.wait())
        await asyncio.wait({ready, self._follower}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._follower.done():
            self._follower.result()  # raises what stopped it

    async def _announce(self, event, record) -> None:
        for listener in self._listeners:
            await listener(event, record)

    async def _close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        if self.generator is not None and self._given_generator is None:
            await self.generator.close()
        if self.store is not None and self._given_store is None:
            await self.store.close()
