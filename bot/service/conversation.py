"""The one conversation path shared by Discord and the console: style, generation, storage.

A reply is made in two steps because Discord only knows the reply's message id after sending:
`draft()` looks up the style in force and asks the engine; `keep()` stores the exchange once
the reply is out. `chat()` does both for callers that have no message id. `stream_draft()` is
`draft()` piece by piece (Discord and the console show a reply as it is decoded): the exchange
is still kept once, with the final text, and a stream cut by an error keeps nothing.
Nothing here imports discord.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from bot.core.dialogue import BOT_MARK, USER_MARK, Turn, neutralise
from bot.core.generation import (
    EngineBusy,
    Generation,
    GenerationFailed,
    Generator,
    PromptTooLong,
    ReplyStream,
)
from bot.core.store import Exchange, Store, StoreUnavailable, TurnRecord
from bot.core.store.privacy import Deleted
from bot.core.text import clean_text, clip, invisible_characters
from bot.service.follow import Serving

log = logging.getLogger(__name__)

BUSY_REPLY = "I'm answering a lot of people right now - please try again in a moment."
FAILED_REPLY = "Sorry, I couldn't come up with a reply just now. Please try again."
STORE_REPLY = "Sorry, I can't reach my memory right now - please try again in a moment."
# What ends a reply shown in part when the rest cannot come (the part is not kept).
CUT_NOTES = {"busy": "… (reply cut off: too many people at once)",
             "failed": "… (reply cut off: the model failed)",
             "unavailable": "… (reply not kept: I can't reach my memory)"}
SCOPE_WORDS = ("channel", "server", "guild")
# A write the store could not take is tried again after these pauses (seconds) before it fails.
RETRY_DELAYS_S = (0.2, 1.0)


async def with_retries(write, what: str):
    """`await write()`, tried again after RETRY_DELAYS_S while the store is unavailable; the
    last StoreUnavailable is raised. Only for writes that are safe to repeat."""
    for delay in RETRY_DELAYS_S:
        try:
            return await write()
        except StoreUnavailable as error:
            log.info("%s: the store is unavailable (%s); trying again in %.1f s", what, error,
                     delay)
            await asyncio.sleep(delay)
    return await write()


class StyleRejected(ValueError):
    """A style prefix that may not be used; the message says why."""


def validate_style(prefix: str, max_chars: int, eos_token: str | None = None) -> str:
    """The cleaned prefix, or StyleRejected when it is empty, a bare scope word, too long, or
    holds role markers or invisible format characters."""
    prefix = clean_text(prefix).strip()
    if not prefix:
        raise StyleRejected("a style prefix needs some text")
    if prefix.lower() in SCOPE_WORDS:
        raise StyleRejected(f"{prefix!r} is a scope, not a style: give the prefix text, e.g. "
                            "'Answer as a polite support agent:'")
    hidden = invisible_characters(prefix)
    if hidden:
        raise StyleRejected("a style prefix may not contain invisible format or control "
                            f"characters ({', '.join(hidden[:5])})")
    if len(prefix) > max_chars:
        raise StyleRejected(f"a style prefix is at most {max_chars} characters "
                            f"(this one has {len(prefix)})")
    # neutralise() rewrites exactly what could forge a turn; any change means a marker was there.
    if neutralise(prefix, eos_token) != prefix:
        raise StyleRejected(f"a style prefix may not contain role markers such as {USER_MARK} "
                            f"or {BOT_MARK}, nor the end-of-text token")
    return prefix


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

    @property
    def text(self) -> str:
        return self.generation.text


@dataclass(frozen=True)
class Failure:
    """No reply could be made; `text` is the short apology to show instead."""

    reason: Literal["busy", "failed", "unavailable"]
    text: str


def cut_off(text: str, reason: Literal["busy", "failed", "unavailable"]) -> str:
    """A reply shown in part, ended with the note saying why the rest is missing."""
    return f"{text.rstrip()} {CUT_NOTES[reason]}".lstrip()


class DraftStream:
    """A reply being generated: `async for piece in stream` gives its text pieces as they are
    decoded (joined: `text`). Iterating never raises what the generator documents: it ends,
    and then either `draft` holds the finished Draft (to `keep`) or `failure` says why there
    is none (`text` non-empty: the reply was cut part-way, see `cut_off`)."""

    def __init__(self, stream: ReplyStream, version: str, finish):
        self.version = version  # the adapter version asked for (the reply reports its own)
        self.text = ""
        self.draft: Draft | None = None
        self.failure: Failure | None = None
        self._stream = stream
        self._finish = finish  # Generation -> Draft
        self._pieces: AsyncIterator[str] | None = None
        self._run_iter = None

    def __aiter__(self) -> AsyncIterator[str]:
        self._run_iter = self._run()
        return self._run_iter

    async def _run(self) -> AsyncIterator[str]:
        self._pieces = aiter(self._stream)
        try:
            async for piece in self._pieces:
                if piece:
                    self.text += piece
                    yield piece
        except EngineBusy:
            self.failure = Failure("busy", BUSY_REPLY)
            return
        except (GenerationFailed, PromptTooLong) as error:
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
        self.draft = self._finish(generation)

    async def aclose(self) -> None:
        """Stop generating (a front end that gives up on the reply: the engine drops it)."""
        if self._run_iter is not None:
            await self._run_iter.aclose()


class Conversation:
    """Turns in, a stored reply out; the same for every front end."""

    def __init__(self, settings, store: Store, generator: Generator,
                 serving: Serving | None = None):
        """`serving` says which adapter answers in each server (without one: the base model
        everywhere)."""
        self.settings = settings
        self.store = store
        self.generator = generator
        self.serving = serving or Serving(store, generator, settings.home_guild_id)

    def tenant_of(self, guild_id: int | None) -> int | None:
        """The server whose data an exchange is: where it was said, a DM's is the home one."""
        return guild_id if guild_id is not None else self.settings.home_guild_id

    async def answers_every_message(self, channel_id: int, parent_id: int | None = None) -> bool:
        """Whether an admin turned `/chat on` in this channel or, for a thread, in its parent
        channel (else: mentions and replies)."""
        return await self.store.chat.is_on(channel_id, parent_id)

    async def style_in_force(self, guild_id: int | None, channel_id: int | None,
                             parent_id: int | None = None) -> str | None:
        style = await self.store.styles.in_force(guild_id, channel_id, parent_id)
        return style.prefix if style else None

    def clean_turns(self, turns: list[Turn]) -> list[Turn]:
        """Each turn as valid text of at most MAX_MESSAGE_CHARS (before anything tokenises or
        stores it: a long message would otherwise be copied into every later context)."""
        limit = self.settings.max_message_chars
        return [Turn(t.role, clip(clean_text(t.text), limit)) for t in turns]

    async def _setting(self, turns: list[Turn], guild_id: int | None, channel_id: int | None,
                       parent_id: int | None
                       ) -> tuple[list[Turn], int | None, str | None] | Failure:
        """What a reply is generated in: the cleaned turns, the tenant and the style in force
        (or the Failure when the store cannot say which style that is)."""
        turns = self.clean_turns(turns)
        try:
            style = await self.style_in_force(guild_id, channel_id, parent_id)
        except StoreUnavailable as error:
            log.warning("no reply: the store is unavailable (%s)", error)
            return Failure("unavailable", STORE_REPLY)
        return turns, self.tenant_of(guild_id), style

    async def draft(self, turns: list[Turn], *, guild_id: int | None,
                    channel_id: int | None, parent_id: int | None = None,
                    origins: list[Origin] | None = None) -> Draft | Failure:
        """Generate a reply to `turns` (oldest first, ending with the user's message) with the
        adapter serving that server. `parent_id`: the parent channel of a thread (its style
        applies there); `origins`: where each context turn came from (kept with the
        exchange)."""
        setting = await self._setting(turns, guild_id, channel_id, parent_id)
        if isinstance(setting, Failure):
            return setting
        turns, tenant, style = setting
        try:
            generation = await self.generator.generate(
                turns, style=style, adapter=self.serving.version_for(tenant))
        except EngineBusy:
            # Counted and summarised once per burst by the engine, not logged per refusal.
            return Failure("busy", BUSY_REPLY)
        except (GenerationFailed, PromptTooLong) as error:
            # What the generator documents; anything else is a bug and reaches the error log.
            log.error("generation failed: %s", error)
            return Failure("failed", FAILED_REPLY)
        return Draft(turns=list(turns), style=style, generation=generation, tenant=tenant,
                     guild_id=guild_id, channel_id=channel_id, origins=tuple(origins or ()))

    async def stream_draft(self, turns: list[Turn], *, guild_id: int | None,
                           channel_id: int | None, parent_id: int | None = None,
                           origins: list[Origin] | None = None) -> DraftStream | Failure:
        """`draft()` piece by piece: the DraftStream to iterate (its `draft` is kept as
        `draft()`'s is), or the Failure when the store cannot say which style is in force."""
        setting = await self._setting(turns, guild_id, channel_id, parent_id)
        if isinstance(setting, Failure):
            return setting
        turns, tenant, style = setting
        version = self.serving.version_for(tenant)
        stream = self.generator.stream(turns, style=style, adapter=version)

        def finish(generation: Generation) -> Draft:
            return Draft(turns=list(turns), style=style, generation=generation, tenant=tenant,
                         guild_id=guild_id, channel_id=channel_id,
                         origins=tuple(origins or ()))

        return DraftStream(stream, version, finish)

    async def keep(self, draft: Draft, *, source: Literal["discord", "console"],
                   user_id: int | str, message_id: int | None = None,
                   user_message_id: int | None = None,
                   extra_message_ids: list[int] | tuple[int, ...] = ()) -> Exchange:
        """Store the exchange of a sent reply (`message_id` its first message, the later pieces
        of a split reply in `extra_message_ids`); user ids are hashed by the store. Tried again
        while the store is unavailable (storing an exchange twice changes nothing), then
        StoreUnavailable is raised."""
        generation = draft.generation
        exchange = Exchange(
            source=source, tenant=draft.tenant, guild_id=draft.guild_id,
            channel_id=draft.channel_id,
            message_id=message_id, extra_message_ids=list(extra_message_ids),
            user_message_id=user_message_id,
            context=self._context_records(draft),
            user_message=draft.turns[-1].text, style=draft.style, reply=generation.text,
            adapter_version=generation.adapter_version, latency_ms=generation.latency_ms,
            prompt_tokens=generation.prompt_tokens, reply_tokens=generation.reply_tokens)
        return await with_retries(lambda: self.store.exchanges.add(exchange, user_id=user_id),
                                  f"storing exchange {exchange.id}")

    def _context_records(self, draft: Draft) -> list[TurnRecord]:
        """The context turns with where each came from (a user's author as a hash)."""
        context = draft.turns[:-1]
        origins = list(draft.origins)[:len(context)]
        origins += [Origin()] * (len(context) - len(origins))
        return [TurnRecord(role=turn.role, text=turn.text, message_id=origin.message_id,
                           author_hash=(self.store.user_hash(origin.author_id)
                                        if turn.role == "user" and origin.author_id is not None
                                        else None))
                for turn, origin in zip(context, origins, strict=True)]

    async def chat(self, turns: list[Turn], *, source: Literal["discord", "console"],
                   user_id: int | str, guild_id: int | None = None,
                   channel_id: int | None = None) -> Exchange | Failure:
        """Draft and store in one step (for front ends without message ids)."""
        draft = await self.draft(turns, guild_id=guild_id, channel_id=channel_id)
        if isinstance(draft, Failure):
            return draft
        try:
            return await self.keep(draft, source=source, user_id=user_id)
        except StoreUnavailable as error:
            log.warning("reply not kept: the store is unavailable (%s)", error)
            return Failure("unavailable", STORE_REPLY)

    async def messages_deleted(self, message_ids) -> Deleted:
        """Apply messages deleted in Discord: a deleted question forgets its exchange, a
        deleted message leaves every exchange holding it as context, a deleted reply's exchange
        leaves the training data. Tried again while the store is unavailable (applying a
        deletion twice changes nothing), then StoreUnavailable is raised."""
        ids = list(message_ids)
        return await with_retries(lambda: self.store.forget_messages(ids),
                                  f"applying {len(ids)} deleted message(s)")

    async def claim_cooldown(self, user_id: int | str, purpose: str = "reply") -> bool:
        """True when this user may be answered now (and starts their cooldown).

        Kept in Redis with SET NX PX, so every shard and process shares one cooldown per user;
        the key is `P:cd:{purpose}:{user_hash}` and expires by itself. A second purpose
        ("notice") lets a front end say "wait" once per window instead of to every message.
        """
        seconds = self.settings.cooldown_seconds
        if seconds <= 0:
            return True
        return await self.store.claim("cd", purpose, self.store.user_hash(user_id),
                                      ttl_s=seconds)
