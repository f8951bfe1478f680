"""The generation boundary: what a front end asks of a model server and what it gets back.

Front ends (the conversation path, the actions, the registry follower) depend on `Generator`,
never on the engine module: `bot/engine/engine.py` is the local implementation, and a remote
inference worker can be another. Importing this module imports neither torch, redis nor
discord.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bot.core.dialogue import PromptTooLong, Turn

BASE_VERSION = "base"  # the one name for "no adapter": the base model serves

# version -> its checked safetensors bytes; given to a Generator when it is built, so `load`
# pulls what it needs (a remote worker fetches from the registry itself, no bytes are pushed).
# It raises what its store raises when it has no usable bytes (the registry: UnknownAdapter,
# AdapterCorrupt).
AdapterSource = Callable[[str], Awaitable[bytes]]

__all__ = ["BASE_VERSION", "AdapterLoadError", "AdapterSource", "EngineBusy", "Generation",
           "GenerationConfig", "GenerationFailed", "Generator", "PromptTooLong", "ReplyStream",
           "consumed"]


class AdapterLoadError(ValueError):
    """The bytes are not a usable adapter for this model; the message says why."""


class EngineBusy(Exception):
    """The request queue is full; the caller should answer "busy" and not retry at once."""


class GenerationFailed(Exception):
    """The model call failed (details are in the server's log); the message is safe to show."""


@dataclass(frozen=True)
class GenerationConfig:
    """What a model server needs to know, and nothing else of the settings."""

    model_name: str
    device: str  # resolved: cpu, cuda, cuda:N or mps
    dtype: str = "auto"  # MODEL_DTYPE (engine/model_dtype.py, engine/int8.py)
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 0.9
    repetition_penalty: float = 1.2
    batch_max_size: int = 16
    batch_max_wait_ms: int = 20
    queue_max: int = 64
    max_loaded_adapters: int = 8
    lora_target_modules: tuple[str, ...] = ("c_attn", "c_proj")
    torch_threads: int | None = None  # TORCH_THREADS (None: torch's default, one per core)

    @classmethod
    def from_settings(cls, settings) -> GenerationConfig:
        return cls(model_name=settings.model_name, device=settings.resolved_device(),
                   dtype=settings.model_dtype,
                   max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                   top_p=settings.top_p, repetition_penalty=settings.repetition_penalty,
                   batch_max_size=settings.batch_max_size,
                   batch_max_wait_ms=settings.batch_max_wait_ms, queue_max=settings.queue_max,
                   max_loaded_adapters=settings.max_loaded_adapters,
                   lora_target_modules=tuple(settings.lora_target_modules),
                   torch_threads=settings.torch_threads)


@dataclass(frozen=True)
class Generation:
    """One finished reply and what produced it."""

    text: str  # the reply, via dialogue.extract_reply (never empty)
    prompt: str  # the exact model input text (after neutralising and truncation)
    prompt_tokens: int
    reply_tokens: int
    latency_ms: float  # from the call until the reply was decoded
    adapter_version: str  # the version that really produced it (BASE_VERSION for none)


@runtime_checkable
class ReplyStream(Protocol):
    """The pieces of one reply as they are decoded: `async for piece in stream`.

    Joined, the pieces are the reply's text. When the iteration has ended, `generation` holds
    the whole reply and what produced it; an iteration that raises (EngineBusy,
    GenerationFailed) leaves it None.
    """

    generation: Generation | None

    def __aiter__(self) -> AsyncIterator[str]: ...


async def consumed(stream: ReplyStream) -> Generation:
    """`stream` read to its end: its Generation (every Generator's `generate`)."""
    async for _ in stream:
        pass
    return stream.generation


@runtime_checkable
class Generator(Protocol):
    """A model server: replies to dialogues with the adapter in service, and adapter swaps.

    Built with an AdapterSource, from which it takes the bytes of each version it loads.
    """

    @property
    def loaded_versions(self) -> list[str]:
        """The adapter versions loaded now (others load on demand)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def generate(self, turns: list[Turn], style: str | None = None, *,
                       adapter: str = BASE_VERSION, **overrides) -> Generation:
        """The reply to `turns` (oldest first, ending with the user's message) by the adapter
        version `adapter`, loaded on demand.

        Raises EngineBusy when the queue is full, GenerationFailed when the model fails or the
        adapter cannot be loaded, and PromptTooLong when the style leaves no room for the
        message.
        """

    def stream(self, turns: list[Turn], style: str | None = None, *,
               adapter: str = BASE_VERSION, **overrides) -> ReplyStream:
        """The same reply as `generate`, piece by piece."""

    async def load(self, version: str, sha256: str | None = None) -> None:
        """Fetch `version` from the adapter source, check it and load it now, so its requests
        do not wait for it (a no-op when it is loaded, unless `sha256`, the registry's digest
        of its bytes, differs from the loaded bytes': after Redis lost its data the registry
        may give a name to other bytes, which then load instead). Raises AdapterLoadError
        when the bytes do not fit the model, and what the source raises when it has none for
        `version`; nothing changes then. Loading never changes what a request already running
        is served with."""
