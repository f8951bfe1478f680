"""The one conversation path shared by Discord and the console: style, generation, storage.

`reply(turns, sink, ...)` makes one reply: it looks up the style in force, asks the generator
with the adapter serving that server, shows the reply on the sink as it is decoded, stores the
exchange once the sink shows it whole (Discord knows a reply's message ids only then), and
takes out of it any message deleted meanwhile. A front end is a ReplySink: the Discord live
reply, the console's writer. `stream_draft()` and `keep()` are its two halves: a stream cut by
an error keeps nothing. Nothing here imports discord.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

from bot.core.dialogue import Turn
from bot.core.generation import Generation, Generator
from bot.core.store import Exchange, Store, StoreUnavailable, TurnRecord
from bot.core.text import clean_text, clip
from bot.service.deletions import Deletions
from bot.service.drafts import STORE_REPLY, Draft, DraftStream, Failure, Origin
from bot.service.follow import AdapterRouter
from bot.service.retry import with_retries

log = logging.getLogger(__name__)

Source = Literal["discord", "console"]


class ReplySink(Protocol):
    """Where a reply is shown while it is made: a Discord channel, a terminal."""

    async def start(self, version: str) -> None:
        """Generation started with adapter `version` (Discord shows "typing..." meanwhile)."""

    async def show(self, text: str) -> None:
        """The reply so far, each time it grows (the sink may show it later, or only whole)."""

    async def finish(self, text: str) -> list[int]:
        """Show the whole reply now; the ids of the messages holding it (none: [])."""

    async def fail(self, failure: Failure, text: str) -> None:
        """No reply is kept; `text` is what was decoded of it (maybe ""). A sink that showed
        part of it ends that with `cut_off(text, failure.reason)`, else it shows
        `failure.text`."""

    async def kept(self, exchange: Exchange) -> None:
        """The reply is stored and stays (what may follow: rating reactions)."""


class Conversation:
    """Turns in, a stored reply out; the same for every front end."""

    def __init__(self, settings, store: Store, generator: Generator, router: AdapterRouter,
                 deletions: Deletions):
        """`router` says which adapter answers in each server; `deletions` which messages went
        while a reply was made."""
        self.settings = settings
        self.store = store
        self.generator = generator
        self.router = router
        self.deletions = deletions

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

    # --- one reply, shown and kept ------------------------------------------------------------

    async def reply(self, turns: list[Turn], sink: ReplySink, *, source: Source,
                    user_id: int | str, guild_id: int | None, channel_id: int | None,
                    parent_id: int | None = None, origins: list[Origin] | None = None,
                    user_message_id: int | None = None,
                    conversation: str | None = None) -> Exchange | Failure:
        """Reply to `turns` (oldest first, ending with the user's message) on `sink`: draft,
        show, keep, then take out what was deleted meanwhile (see the module docstring).

        `parent_id`: the parent channel of a thread (its style applies there); `origins`:
        where each context turn came from; `user_message_id`: the message answered;
        `conversation`: its id (a server's canary answers a share of them). Returns
        the stored exchange (the sink is told `kept` unless its question was deleted
        meanwhile), or the Failure the sink was told (nothing is kept then)."""
        origins = list(origins or [])
        stream = await self.stream_draft(turns, guild_id=guild_id, channel_id=channel_id,
                                         parent_id=parent_id, origins=origins,
                                         conversation=conversation)
        if isinstance(stream, Failure):
            await sink.fail(stream, "")
            return stream
        shown = await self._show(stream, sink)
        if isinstance(shown, Failure):
            return shown
        draft, message_ids = shown
        try:
            exchange = await self.keep(
                draft, source=source, user_id=user_id,
                message_id=message_ids[0] if message_ids else None,
                extra_message_ids=message_ids[1:], user_message_id=user_message_id)
        except StoreUnavailable as error:
            # The reply is out but cannot be rated: its end says it was not kept.
            log.error("a reply in channel %s was shown but not stored: the store is "
                      "unavailable (%s)", channel_id, error)
            failure = Failure("unavailable", STORE_REPLY)
            await sink.fail(failure, draft.text)
            return failure
        gone = [user_message_id, *(origin.message_id for origin in origins), *message_ids]
        if await self._left_meanwhile(exchange, gone):
            return exchange
        log.info("answered with adapter %s in %.0f ms (exchange %s)",
                 exchange.adapter_version, exchange.latency_ms, exchange.id)
        await sink.kept(exchange)
        return exchange

    async def _show(self, stream: DraftStream, sink: ReplySink
                    ) -> tuple[Draft, list[int]] | Failure:
        """Show `stream` on `sink` as it is decoded, then whole: the draft and the ids of the
        messages holding it, or the Failure the sink was told."""
        await sink.start(stream.version)
        try:
            async for _ in stream:
                await sink.show(stream.text)
            if stream.failure is not None:
                await sink.fail(stream.failure, stream.text)
                return stream.failure
            return stream.draft, await sink.finish(stream.draft.text)
        finally:  # a reply given up (an error, a cancelled task) stops its generation
            await stream.aclose()

    async def _left_meanwhile(self, exchange: Exchange, message_ids: list[int | None]) -> bool:
        """Take the messages of this exchange deleted while it was made (one of the reply's
        own pieces too) out of the store now; True when it is not to be rated: its question
        went, or the store could not take the deletion."""
        raced = self.deletions.among(message_ids)
        if not raced:
            return False
        try:
            await self.deletions.apply(raced)
        except StoreUnavailable as error:
            log.error("exchange %s: messages deleted meanwhile could not leave it: the store is "
                      "unavailable (%s)", exchange.id, error)
            return True
        if exchange.user_message_id in raced:
            log.info("exchange %s: its question was deleted meanwhile, so nothing is kept",
                     exchange.id)
            return True
        return False

    # --- its two halves -----------------------------------------------------------------------

    async def stream_draft(self, turns: list[Turn], *, guild_id: int | None,
                           channel_id: int | None, parent_id: int | None = None,
                           origins: list[Origin] | None = None,
                           conversation: str | None = None) -> DraftStream | Failure:
        """A reply to `turns` with the adapter serving that server, piece by piece: the
        DraftStream to iterate (its `draft` is what `keep` stores), or the Failure when the
        store cannot say which style is in force."""
        turns = self.clean_turns(turns)
        try:
            style = await self.style_in_force(guild_id, channel_id, parent_id)
        except StoreUnavailable as error:
            log.warning("no reply: the store is unavailable (%s)", error)
            return Failure("unavailable", STORE_REPLY)
        tenant = self.tenant_of(guild_id)
        version = self.router.version_for(tenant, conversation)
        stream = self.generator.stream(turns, style=style, adapter=version)

        def finish(generation: Generation) -> Draft:
            return Draft(turns=list(turns), style=style, generation=generation, tenant=tenant,
                         guild_id=guild_id, channel_id=channel_id,
                         origins=tuple(origins or ()), parent_id=parent_id)

        return DraftStream(stream, version, finish)

    async def keep(self, draft: Draft, *, source: Source, user_id: int | str,
                   message_id: int | None = None, user_message_id: int | None = None,
                   extra_message_ids: list[int] | tuple[int, ...] = ()) -> Exchange:
        """Store the exchange of a sent reply (`message_id` its first message, the later pieces
        of a split reply in `extra_message_ids`); user ids are hashed by the store. Tried again
        while the store is unavailable (storing an exchange twice changes nothing), then
        StoreUnavailable is raised."""
        generation = draft.generation
        exchange = Exchange(
            source=source, tenant=draft.tenant, guild_id=draft.guild_id,
            channel_id=draft.channel_id, parent_id=draft.parent_id,
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
