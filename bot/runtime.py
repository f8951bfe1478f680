"""One runtime for every process that serves: store, generator and the registry follower.

    async with Runtime(settings) as runtime:
        runtime.store, runtime.generator, runtime.conversation, runtime.actions
        runtime.on_change(callback)    # called after each adapter change this process swapped in

Entering connects to Redis (checking the schema), loads the model off the event loop, starts
the generator, swaps in the active adapter (or, when it cannot be loaded, the newest earlier
one that can) and starts following the registry; leaving stops them in reverse order. The
Discord bot, the console and the demo all run inside one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bot.actions import Actions
from bot.conversation import Conversation
from bot.follow import OnChange, follow_registry, serve_best
from bot.generation import Generator
from bot.store import Store

log = logging.getLogger(__name__)


def load_engine(settings) -> Generator:
    """The local engine for MODEL_NAME (imports torch, so only when a process generates)."""
    from bot.engine import Engine

    return Engine.from_settings(settings)


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
        self.conversation: Conversation | None = None
        self.actions: Actions | None = None

    def on_change(self, callback: OnChange) -> None:
        self._listeners.append(callback)

    async def __aenter__(self) -> Runtime:
        try:
            self.store = self._given_store or Store.from_settings(self.settings)
            await self.store.ping()
            self.generator = (self._given_generator
                              or await asyncio.to_thread(load_engine, self.settings))
            await self.generator.start()
            self.conversation = Conversation(self.settings, self.store, self.generator)
            self.actions = Actions(self.settings, self.store, self.generator)
            # A damaged active adapter does not stop the process: an older one serves instead.
            unservable: set[str] = set()
            await serve_best(self.store, self.generator, unservable)
            if self._follow:
                self._follower = asyncio.create_task(
                    follow_registry(self.store, self.generator, on_change=self._announce,
                                    unservable=unservable),
                    name="adapter-follower")
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self._close()

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
