"""The chat cog: decides when to answer, gathers the conversation, sends and stores the reply,
and applies deleted messages to the store.

A thread (a forum post too) follows its parent channel: `/chat on` and the style of the parent
apply in its threads. How a reply is sent lives in replies.py beside this file: it is shown
while it is decoded and stored once it is whole; a reply cut part-way ends with a note and is
not stored.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import AsyncExitStack, asynccontextmanager

import discord
from discord.ext import commands

from bot.core.dialogue import Turn
from bot.core.store import StoreUnavailable
from bot.frontends.discord.cogs.replies import LiveReply, add_rating_reactions, send_reply
from bot.service.conversation import (
    STORE_REPLY,
    Conversation,
    DraftStream,
    Failure,
    Origin,
    cut_off,
)

log = logging.getLogger(__name__)

COOLDOWN_REPLY = "One moment please - I answer each person at most every {seconds:g} seconds."
# Deleted message ids are remembered this long, so a question or context message deleted while
# its reply was being made is taken out of the exchange once that is stored.
DELETIONS_KEPT_S = 900.0


def parent_of(channel) -> int | None:
    """The parent channel of a thread or forum post (None for anything else)."""
    return channel.parent_id if isinstance(channel, discord.Thread) else None


@asynccontextmanager
async def typing_in(channel: discord.abc.Messageable):
    """Show "typing..." while the body runs; a channel that refuses it is answered anyway."""
    typing = channel.typing()
    try:
        await typing.__aenter__()
    except discord.HTTPException as error:
        log.info("no typing indicator in channel: %s", error)
        typing = None
    try:
        yield
    finally:
        if typing is not None:
            await typing.__aexit__(None, None, None)


def plain_text(message: discord.Message, bot_user: discord.abc.User) -> str:
    """The message text without the bot's mention, other user mentions as @names."""
    text = re.sub(rf"<@!?{bot_user.id}>", "", message.content)
    for user in message.mentions:
        if user.id != bot_user.id:
            text = re.sub(rf"<@!?{user.id}>", f"@{user.display_name}", text)
    return text.strip()


class Chat(commands.Cog):
    def __init__(self, bot):
        self.bot = bot
        self.settings = bot.settings
        self.conversation: Conversation = bot.conversation
        self._deleted: dict[int, float] = {}  # message id -> when its deletion was seen
        self.clock = time.monotonic  # paces a streamed reply's edits (a test may replace it)

    # --- when to answer -----------------------------------------------------------------------

    async def _referenced(self, message: discord.Message) -> discord.Message | None:
        """The message `message` replies to, fetched when it is not cached."""
        ref = message.reference
        if ref is None or ref.message_id is None:
            return None
        if isinstance(ref.resolved, discord.Message):
            return ref.resolved
        if ref.cached_message is not None:
            return ref.cached_message
        try:
            return await message.channel.fetch_message(ref.message_id)
        except discord.HTTPException:
            return None

    def is_chat(self, message: discord.Message) -> bool:
        """A person's message with text: not a system message (joins, pins, boosts, a thread
        started), not empty nor attachments only once the bot's mention is taken out."""
        return not message.is_system() and bool(plain_text(message, self.bot.user))

    async def should_answer(self, message: discord.Message) -> bool:
        me = self.bot.user
        if message.author.bot or message.author.id == me.id or not self.is_chat(message):
            return False
        if message.guild is None:
            return self.settings.dm_enabled
        if me in message.mentions:
            return True
        parent = await self._referenced(message)
        if parent is not None and parent.author.id == me.id:
            return True
        return await self.conversation.answers_every_message(message.channel.id,
                                                             parent_of(message.channel))

    # --- the conversation ---------------------------------------------------------------------

    def _turn(self, message: discord.Message) -> tuple[Turn, Origin]:
        """The message as a turn, with where it came from (a person's turn names its author)."""
        if message.author.id == self.bot.user.id:
            return Turn("bot", plain_text(message, self.bot.user)), Origin(message.id)
        return (Turn("user", plain_text(message, self.bot.user)),
                Origin(message.id, message.author.id))

    async def conversation_turns(self, message: discord.Message
                                 ) -> tuple[list[Turn], list[Origin]]:
        """The reply chain above `message` (or the channel's last messages), oldest first, and
        where each earlier turn came from."""
        limit = self.settings.context_messages
        earlier: list[tuple[Turn, Origin]] = []
        if message.reference is not None:
            current = message
            while len(earlier) < limit:
                current = await self._referenced(current)
                if current is None:
                    break
                if not current.is_system():
                    earlier.insert(0, self._turn(current))
        elif limit:
            try:
                async for older in message.channel.history(limit=limit, before=message):
                    if older.content and not older.is_system():
                        earlier.insert(0, self._turn(older))
            except discord.HTTPException as error:  # e.g. no Read Message History
                log.info("no channel history for context: %s", error)
        turns = [turn for turn, _ in earlier] + [self._turn(message)[0]]
        return turns, [origin for _, origin in earlier]

    # --- answering ----------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        try:
            if not await self.should_answer(message):
                return
        except StoreUnavailable as error:  # cannot tell whether /chat is on here: stay quiet
            log.warning("message %s in channel %s not answered: the store is unavailable (%s)",
                        message.id, message.channel.id, error)
            return
        try:
            if not await self.conversation.claim_cooldown(message.author.id):
                # Say "wait" once per cooldown window, so a burst of messages is not echoed.
                if await self.conversation.claim_cooldown(message.author.id, "notice"):
                    await self._send_quietly(message, COOLDOWN_REPLY.format(
                        seconds=self.settings.cooldown_seconds))
                return
            await self.answer(message)
        except StoreUnavailable as error:
            log.warning("message %s in channel %s not answered: the store is unavailable (%s)",
                        message.id, message.channel.id, error)
            await self._send_quietly(message, STORE_REPLY)

    async def _send_quietly(self, message: discord.Message, text: str) -> None:
        try:
            await send_reply(message, text)
        except discord.HTTPException as error:
            log.warning("could not answer in channel %s: %s", message.channel.id, error)

    async def answer(self, message: discord.Message) -> None:
        turns, origins = await self.conversation_turns(message)
        guild_id = message.guild.id if message.guild else None
        stream = await self.conversation.stream_draft(
            turns, guild_id=guild_id, channel_id=message.channel.id,
            parent_id=parent_of(message.channel), origins=origins)
        if isinstance(stream, Failure):
            await self._send_quietly(message, stream.text)
            return
        live = LiveReply(message, clock=self.clock)
        try:
            await self._show_while_decoding(live, stream, message.channel)
            if stream.failure is not None:  # before any words: the apology, as for a draft
                if live.started:
                    await live.finish(cut_off(stream.text, stream.failure.reason))
                else:
                    await self._send_quietly(message, stream.failure.text)
                return
            draft = stream.draft
            sent = await live.finish(draft.text)
        except discord.HTTPException as error:  # e.g. its message deleted meanwhile
            log.error("could not send a reply in channel %s: %s", message.channel.id, error)
            return
        finally:  # a reply given up (an error, a cancelled task) stops its generation
            await stream.aclose()
        try:
            exchange = await self.conversation.keep(
                draft, source="discord", user_id=message.author.id, message_id=sent[0].id,
                extra_message_ids=[piece.id for piece in sent[1:]], user_message_id=message.id)
        except StoreUnavailable as error:
            # The reply is out but cannot be rated: no rating buttons invite a lost rating,
            # and its end says it was not kept.
            log.error("reply %s in channel %s was sent but not stored: the store is "
                      "unavailable (%s)", sent[0].id, message.channel.id, error)
            try:
                await live.finish(cut_off(draft.text, "unavailable"))
            except discord.HTTPException as failed:
                log.warning("could not mark reply %s as not kept: %s", sent[0].id, failed)
            return
        try:
            # A message deleted while the reply was made (one of its own pieces too) leaves
            # the exchange now.
            raced = self._deleted_among([message.id, *(o.message_id for o in origins),
                                         *(piece.id for piece in sent)])
            if raced:
                await self.conversation.messages_deleted(raced)
        except StoreUnavailable as error:
            log.error("reply %s: messages deleted meanwhile could not leave its exchange: the "
                      "store is unavailable (%s)", sent[0].id, error)
            return
        if message.id in raced:
            log.info("reply %s: its question was deleted meanwhile, so nothing is kept",
                     sent[0].id)
            return
        log.info("answered with adapter %s in %.0f ms (exchange %s)",
                 exchange.adapter_version, exchange.latency_ms, exchange.id)
        if message.guild is not None:  # ratings are a server's: none under a DM reply
            await add_rating_reactions(sent)

    async def _show_while_decoding(self, live: LiveReply, stream: DraftStream,
                                   channel: discord.abc.Messageable) -> None:
        """Iterate `stream`, showing its text as it grows; "typing..." until the first words
        are out."""
        async with AsyncExitStack() as waiting:
            await waiting.enter_async_context(typing_in(channel))
            async for _ in stream:
                await live.show(stream.text)
                if live.started:
                    await waiting.aclose()

    # --- deleted messages ---------------------------------------------------------------------

    def _deleted_among(self, message_ids) -> list[int]:
        return [i for i in message_ids if i is not None and i in self._deleted]

    async def _apply_deletions(self, message_ids: set[int]) -> None:
        """Take deleted messages out of the store (and remember them a while, for replies
        being made meanwhile)."""
        now = time.monotonic()
        self._deleted = {i: t for i, t in self._deleted.items() if now - t < DELETIONS_KEPT_S}
        self._deleted.update(dict.fromkeys(message_ids, now))
        try:
            done = await self.conversation.messages_deleted(message_ids)
        except StoreUnavailable as error:
            log.error("%d deleted message(s) not applied to the store: it is unavailable (%s)",
                      len(message_ids), error)
            return
        if done.exchanges or done.context_turns or done.replies:
            log.info("deleted messages applied: %d exchange(s) forgotten, %d context turn(s) "
                     "dropped, %d reply(ies) out of the training data", done.exchanges,
                     done.context_turns, done.replies)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._apply_deletions({payload.message_id})

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent
                                         ) -> None:
        await self._apply_deletions(set(payload.message_ids))


async def setup(bot) -> None:
    await bot.add_cog(Chat(bot))
