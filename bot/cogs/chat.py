"""The chat cog: decides when to answer, gathers the conversation, sends and stores the reply."""

from __future__ import annotations

import logging
import re
from contextlib import asynccontextmanager

import discord
from discord.ext import commands

from bot.conversation import STORE_REPLY, Conversation, Failure
from bot.dialogue import Turn
from bot.store import StoreUnavailable

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
THUMBS_UP = "\N{THUMBS UP SIGN}"
THUMBS_DOWN = "\N{THUMBS DOWN SIGN}"
COOLDOWN_REPLY = "One moment please - I answer each person at most every {seconds:g} seconds."


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Pieces of at most `limit` characters, cut at a line break or space where there is one."""
    pieces = []
    while len(text) > limit:
        cut = max(text.rfind("\n", 0, limit + 1), text.rfind(" ", 0, limit + 1))
        if cut <= limit // 2:  # no good break nearby: cut hard rather than make tiny pieces
            cut = limit
        pieces.append(text[:cut])
        text = text[cut:].lstrip("\n ") if cut < limit else text[cut:]
    if text or not pieces:
        pieces.append(text)
    return pieces


async def send_reply(message: discord.Message, text: str) -> list[discord.Message]:
    """Send `text` as a reply to `message`, split to Discord's limit.

    Mentions are disabled by the client's `allowed_mentions` (AllowedMentions.none()), so a
    generated "@everyone" or "<@id>" is shown but never pings; the reply does not ping the
    author either.
    """
    sent = []
    for number, piece in enumerate(split_message(text)):
        if number == 0:
            sent.append(await message.reply(piece))
        else:
            sent.append(await message.channel.send(piece))
    return sent


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

    async def should_answer(self, message: discord.Message) -> bool:
        me = self.bot.user
        if message.author.bot or message.author.id == me.id:
            return False
        if message.guild is None:
            return self.settings.dm_enabled
        if me in message.mentions:
            return True
        parent = await self._referenced(message)
        if parent is not None and parent.author.id == me.id:
            return True
        return await self.conversation.answers_every_message(message.channel.id)

    # --- the conversation ---------------------------------------------------------------------

    def _turn(self, message: discord.Message) -> Turn:
        role = "bot" if message.author.id == self.bot.user.id else "user"
        return Turn(role, plain_text(message, self.bot.user))

    async def conversation_turns(self, message: discord.Message) -> list[Turn]:
        """The reply chain above `message` (or the channel's last messages), oldest first."""
        limit = self.settings.context_messages
        earlier: list[Turn] = []
        if message.reference is not None:
            current = message
            while len(earlier) < limit:
                current = await self._referenced(current)
                if current is None:
                    break
                earlier.insert(0, self._turn(current))
        elif limit:
            try:
                async for older in message.channel.history(limit=limit, before=message):
                    if older.content:
                        earlier.insert(0, self._turn(older))
            except discord.HTTPException as error:  # e.g. no Read Message History
                log.info("no channel history for context: %s", error)
        return [*earlier, self._turn(message)]

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
        turns = await self.conversation_turns(message)
        guild_id = message.guild.id if message.guild else None
        async with typing_in(message.channel):
            draft = await self.conversation.draft(turns, guild_id=guild_id,
                                                  channel_id=message.channel.id)
        if isinstance(draft, Failure):
            await self._send_quietly(message, draft.text)
            return
        try:
            sent = await send_reply(message, draft.text)
        except discord.HTTPException as error:
            log.error("could not send a reply in channel %s: %s", message.channel.id, error)
            return
        try:
            exchange = await self.conversation.keep(
                draft, source="discord", user_id=message.author.id, message_id=sent[0].id,
                user_message_id=message.id)
        except StoreUnavailable as error:
            # The reply is out but cannot be rated: no rating buttons invite a lost rating.
            log.error("reply %s in channel %s was sent but not stored: the store is "
                      "unavailable (%s)", sent[0].id, message.channel.id, error)
            return
        log.info("answered with adapter %s in %.0f ms (exchange %s)",
                 exchange.adapter_version, exchange.latency_ms, exchange.id)
        try:
            for emoji in (THUMBS_UP, THUMBS_DOWN):
                await sent[0].add_reaction(emoji)
        except discord.HTTPException as error:  # no Add Reactions: ratings can still be added
            log.warning("could not add rating reactions: %s", error)


async def setup(bot) -> None:
    await bot.add_cog(Chat(bot))
