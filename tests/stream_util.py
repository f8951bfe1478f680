"""A scripted ReplyStream and a recording ReplySink: test doubles of our own boundaries
(bot/core/generation.py, bot/service/conversation.py), not of a library.

The tiny model cannot be made to decode many pieces, a 3,000-character reply or a failure
half-way on demand; the front ends (console, Discord) must handle all of those. A
ScriptedStream yields the pieces a test gives, in the order and with the failure it gives; the
FakeGenerator (tests/fake_generator.py) answers with them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import AsyncIterator, Callable

from bot.core.generation import GenerationFailed
from bot.service.drafts import Failure


class ScriptedStream:
    """Yields `pieces`, letting other tasks run before each as a model's pieces come from
    another task; raises `error` after `fail_after` of them (None: never). `before_piece`
    (plain or async) runs before each piece is handed out, with its number (a test moves its
    clock there, or acts as a user would meanwhile). `reply`: the final reply when it is not
    the pieces joined (a generator whose last word shortens what it streamed)."""

    def __init__(self, make_generation, pieces: list[str], *, fail_after: int | None = None,
                 error: Exception | None = None, before_piece: Callable | None = None,
                 reply: str | None = None):
        self._make_generation = make_generation
        self.pieces = list(pieces)
        self.fail_after = fail_after
        self.error = error or GenerationFailed("the model call failed")
        self.before_piece = before_piece
        self.reply = reply
        self.generation = None
        self.handed_out = 0
        self.closed = False

    def __aiter__(self) -> AsyncIterator[str]:
        return self._run()

    async def _run(self) -> AsyncIterator[str]:
        try:
            for number, piece in enumerate(self.pieces):
                await asyncio.sleep(0)
                if number == self.fail_after:
                    raise self.error
                if self.before_piece is not None:
                    done = self.before_piece(number)
                    if inspect.isawaitable(done):
                        await done
                self.handed_out += 1
                yield piece
            if self.fail_after is not None and self.fail_after >= len(self.pieces):
                raise self.error
            made = await self._make_generation()
            text = self.reply if self.reply is not None else "".join(self.pieces).strip()
            self.generation = dataclasses.replace(made, text=text)
        finally:
            self.closed = True


def words(count: int, word: str = "word") -> list[str]:
    """`count` pieces as a model decodes them: each word with its leading space."""
    return [f" {word}{n}" for n in range(count)]


class RecordingSink:
    """A ReplySink (bot/service/conversation.py) that shows nothing: it records what it was
    told, in order, and says the reply is held by `message_ids` (none: a console's reply)."""

    def __init__(self, message_ids: list[int] | None = None):
        self.calls: list[tuple] = []
        self.message_ids = list(message_ids or [])

    async def start(self, version: str) -> None:
        self.calls.append(("start", version))

    async def show(self, text: str) -> None:
        self.calls.append(("show", text))

    async def finish(self, text: str) -> list[int]:
        self.calls.append(("finish", text))
        return self.message_ids

    async def fail(self, failure, text: str) -> None:
        self.calls.append(("fail", failure, text))

    async def kept(self, exchange) -> None:
        self.calls.append(("kept", exchange.id))


async def drafted(conversation, turns, **where):
    """`conversation.stream_draft(turns, **where)` read to its end: the Draft, or the Failure."""
    stream = await conversation.stream_draft(turns, **where)
    if isinstance(stream, Failure):
        return stream
    async for _ in stream:
        pass
    return stream.draft or stream.failure
