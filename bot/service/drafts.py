"""A reply being made: the draft it becomes (not stored yet), the stream that decodes it, and
the Failure with the short apology shown when there is none.

A stream cut part-way (the model failed, the queue is full) ends with a Failure instead of a
draft; the part already shown is ended with a note saying why (`cut_off`). Nothing here
imports discord.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from bot.core.dialogue import Turn
from bot.core.generation import (
    EngineBusy,
    Generation,
    GenerationFailed,
    PromptTooLong,
    ReplyStream,
)
from bot.core.text import strip_controls

log = logging.getLogger(__name__)

BUSY_REPLY = "I'm answering a lot of people right now - please try again in a moment."
FAILED_REPLY = "Sorry, I couldn't come up with a reply just now. Please try again."
STORE_REPLY = "Sorry, I can't reach my memory right now - please try again in a moment."
# What ends a reply shown in part when the rest cannot come (the part is not kept).
CUT_NOTES = {"busy": "… (reply cut off: too many people at once)",
             "failed": "… (reply cut off: the model failed)",
             "unavailable": "… (reply not kept: I can't reach my memory)"}

Reason = Literal["busy", "failed", "unavailable"]


@dataclass(frozen=True)
class Origin:
    """Where a context turn came from: its message and its author (None where unknown), so a
    deleted message or a forgotten author can be taken out of every exchange holding it."""

    message_id: int | None = None
    author_id: int | str | None = None


@dataclass(frozen=True)
class Draft:
    """A generated reply not yet stored: what it answered and what produced it."""

    turns: list[Turn]
    style: str | None
    generation: Generation
    tenant: int | None  # the server whose data the exchange is
    guild_id: int | None
    channel_id: int | None  # where it was said (a thread's own id in a thread)
    origins: tuple[Origin, ...] = ()  # one per context turn (turns[:-1]), when known
    parent_id: int | None = None  # a thread's parent channel

    @property
    def text(self) -> str:
        return self.generation.text


@dataclass(frozen=True)
class Failure:
    """No reply could be made; `text` is the short apology to show instead."""

    reason: Reason
    text: str


def cut_off(text: str, reason: Reason) -> str:
    """A reply shown in part, ended with the note saying why the rest is missing."""
    return f"{text.rstrip()} {CUT_NOTES[reason]}".lstrip()


class DraftStream:
    """A reply being generated: `async for piece in stream` gives its text pieces as they are
    decoded (joined: `text`). Iterating never raises what the generator documents: it ends,
    and then either `draft` holds the finished Draft (to `keep`) or `failure` says why there
    is none (`text` non-empty: the reply was cut part-way, see `cut_off`)."""

    def __init__(self, stream: ReplyStream, version: str,
                 finish: Callable[[Generation], Draft]):
        self.version = version  # the adapter version asked for (the reply reports its own)
        self.text = ""
        self.draft: Draft | None = None
        self.failure: Failure | None = None
        self._stream = stream
        self._finish = finish
        self._pieces: AsyncIterator[str] | None = None
        self._run_iter = None

    def __aiter__(self) -> AsyncIterator[str]:
        self._run_iter = self._run()
        return self._run_iter

    async def _run(self) -> AsyncIterator[str]:
        self._pieces = aiter(self._stream)
        try:
            async for piece in self._pieces:
                piece = strip_controls(piece)  # the same characters leave the stored text
                if piece:
                    self.text += piece
                    yield piece
        except EngineBusy:
            # Counted and summarised once per burst by the engine, not logged per refusal.
            self.failure = Failure("busy", BUSY_REPLY)
            return
        except (GenerationFailed, PromptTooLong) as error:
            # What the generator documents; anything else is a bug and reaches the error log.
            log.error("generation failed%s: %s", " part-way" if self.text else "", error)
            self.failure = Failure("failed", FAILED_REPLY)
            return
        finally:  # a consumer that stopped early closes the generator's stream too
            close = getattr(self._pieces, "aclose", None)
            if close is not None:
                await close()
        generation = self._stream.generation
        if generation is None:  # a generator breaking its protocol: a bug, but no half reply
            log.error("the reply stream ended without its generation")
            self.failure = Failure("failed", FAILED_REPLY)
            return
        text = strip_controls(generation.text)
        if text != generation.text and not text.strip():  # an empty reply stays as it was
            log.error("the reply held nothing but control characters")
            self.failure = Failure("failed", FAILED_REPLY)
            return
        self.draft = self._finish(dataclasses.replace(generation, text=text))

    async def aclose(self) -> None:
        """Stop generating (a front end that gives up on the reply: the engine drops it)."""
        if self._run_iter is not None:
            await self._run_iter.aclose()
