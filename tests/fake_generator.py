"""A Generator (bot/core/generation.py) without a model, for the front-end tests.

A test scripts what the "model" decodes (`script`): many pieces, thousands of characters, a
failure half-way, which the tiny model cannot be made to do on demand. Everything else keeps
the protocol's promises, checked against the real engine's in
tests/integration/test_generator_contract.py: the pieces join to the reply, a reply carries
the version it was asked for, versions are fetched from the adapter source given at
construction (checked by bot/core/adapter_io as the engine checks them first) and the least
recently used goes past MAX_LOADED_ADAPTERS, a version that cannot be loaded fails only its
own requests, a full queue refuses with EngineBusy and a closed generator with
GenerationFailed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from stream_util import ScriptedStream

from bot.core import dialogue
from bot.core.adapter_io import AdapterLoadError, parse_adapter
from bot.core.dialogue import Turn
from bot.core.generation import (
    BASE_VERSION,
    EngineBusy,
    Generation,
    GenerationFailed,
    consumed,
)

if TYPE_CHECKING:
    from bot.core.generation import AdapterSource, GenerationConfig


class FakeStream(ScriptedStream):
    """One reply of a FakeGenerator: admitted (or refused) when its iteration starts, its
    version loaded on demand, then the scripted pieces."""

    def __init__(self, generator: FakeGenerator, turns: list[Turn], style: str | None,
                 adapter: str, pieces: list[str], **options):
        super().__init__(self._generation, pieces, **options)
        self._generator = generator
        self._turns, self._style, self._adapter = turns, style, adapter
        self._started = time.perf_counter()

    async def _run(self) -> AsyncIterator[str]:
        self._generator.admit()
        pieces = super()._run()
        try:
            await self._generator.ready(self._adapter)
            async for piece in pieces:
                yield piece
        finally:  # a consumer that stops early closes the scripted pieces too
            await pieces.aclose()
            self._generator.running -= 1

    async def _generation(self) -> Generation:
        prompt = dialogue.render(self._turns, self._style)
        text = "".join(self.pieces)
        return Generation(text=text, prompt=prompt, prompt_tokens=len(prompt.split()),
                          reply_tokens=len(self.pieces), adapter_version=self._adapter,
                          latency_ms=(time.perf_counter() - self._started) * 1000)


class FakeGenerator:
    """See the module docstring. Without a script, a reply echoes the user's last message."""

    def __init__(self, config: GenerationConfig, adapter_source: AdapterSource | None = None):
        self.config = config
        self._source = adapter_source
        self._loaded: list[str] = []  # least recently used first
        self._closed = False
        self._script: dict | None = None
        self.running = 0  # replies admitted and not finished
        self.streams: list[FakeStream] = []  # every stream made, oldest first
        self.fetched: list[str] = []  # every version fetched from the source, in order

    def script(self, pieces: list[str], **options) -> None:
        """Every later reply decodes `pieces` (ScriptedStream's options: fail_after, error,
        before_piece, reply)."""
        self._script = {"pieces": list(pieces), **options}

    @property
    def loaded_versions(self) -> list[str]:
        return list(self._loaded)

    async def start(self) -> None:
        if self._closed:
            raise GenerationFailed("the engine is closed")

    async def close(self) -> None:
        self._closed = True

    def stream(self, turns: list[Turn], style: str | None = None, *,
               adapter: str = BASE_VERSION, **overrides) -> FakeStream:
        script = self._script or {"pieces": _echo(turns[-1].text)}
        made = FakeStream(self, turns, style, adapter, **script)
        self.streams.append(made)
        return made

    async def generate(self, turns: list[Turn], style: str | None = None, *,
                       adapter: str = BASE_VERSION, **overrides) -> Generation:
        return await consumed(self.stream(turns, style, adapter=adapter, **overrides))

    async def load(self, version: str, sha256: str | None = None) -> None:
        if version in self._loaded:
            return
        if self._source is None:
            raise AdapterLoadError("the engine has no adapter source to load it from")
        self.fetched.append(version)
        parsed = parse_adapter(await self._source(version))
        if parsed.base_model != self.config.model_name:
            raise AdapterLoadError(f"adapter was trained on base model {parsed.base_model!r}, "
                                   f"this engine serves {self.config.model_name!r}")
        if len(self._loaded) >= self.config.max_loaded_adapters:
            self._loaded.pop(0)
        self._loaded.append(version)

    # --- what its streams ask -----------------------------------------------------------------

    def admit(self) -> None:
        """Take one reply, or refuse it as the engine does: closed, or the queue full."""
        if self._closed:
            raise GenerationFailed("the engine is closed")
        if self.running - self.config.batch_max_size >= self.config.queue_max:
            raise EngineBusy(f"{self.config.queue_max} requests are already waiting")
        self.running += 1

    async def ready(self, version: str) -> None:
        """`version` loaded (on demand) and marked as the most recently used."""
        if version == BASE_VERSION:
            return
        try:
            await self.load(version)
        except Exception as error:  # every kind of failure fails only this request
            raise GenerationFailed(f"adapter {version} cannot be served") from error
        self._loaded.remove(version)
        self._loaded.append(version)


def _echo(text: str) -> list[str]:
    """The pieces of an echo of `text`, as a model decodes them (a word with its space)."""
    words = text.split() or ["..."]
    return ["you said:", *(f" {word}" for word in words)]
