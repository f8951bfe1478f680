"""The chat cog: decides when to answer, gathers the conversation, has the conversation reply
in the channel, and passes deleted messages on.

A thread (a forum post too) follows its parent channel: `/chat on` and the style of the parent
apply in its threads. How a reply is shown lives in replies.py beside this file (ChannelReply,
the Discord sink of `Conversation.reply`): it is shown while it is decoded and stored once it is
whole; a reply cut part-way ends with a note and is not stored. Every write in a channel goes
through its write scheduler (channel_writes.py); past REPLIES_IN_FLIGHT replies there, a message
gets a short "busy" note instead.
"""

from __future__ import annotations

import logging
import re

import discord
from discord.ext import commands

from bot.core.dialogue import Turn
from bot.core.store import StoreUnavailable
from bot.frontends.discord import permissions
from bot.frontends.discord.channel_writes import BUSY_REPLY, ChannelWrites, WriteSchedulers
from bot.frontends.discord.cogs.replies import ChannelReply, send_reply
from bot.service.conversation import Conversation
from bot.service.cooldowns import Cooldowns
from bot.service.deletions import Deletions
from bot.service.drafts import STORE_REPLY, Origin

log = logging.getLogger(__name__)

ATTACHMENTS_IGNORED = ("I read text only: I can't open attachments (files, images), so I answer "
                       "only what you wrote.")
COOLDOWN_REPLY = "One moment please - I answer each person at most every {seconds:g} seconds."


def parent_of(channel) -> int | None:
    """The parent channel of a thread or forum post (None for anything else)."""
    return channel.parent_id if isinstance(channel, discord.Thread) else None


def own_role(message: discord.Message) -> discord.Role | None:
    """The bot's own managed role in the message's server (what "@Bot" autocomplete often
    picks: mentioning it addresses the bot too)."""
    return message.guild.self_role if message.guild is not None else None


def mentions_bot(message: discord.Message, bot_user: discord.abc.User) -> bool:
    role = own_role(message)
    return bot_user in message.mentions or (role is not None and role in message.role_mentions)


def plain_text(message: discord.Message, bot_user: discord.abc.User) -> str:
    """The message text without the bot's mention (or its role's), other user mentions as
    @names."""
    text = re.sub(rf"<@!?{bot_user.id}>", "", message.content)
    if (role := own_role(message)) is not None:
        text = text.replace(f"<@&{role.id}>", "")
    for user in message.mentions:
        if user.id != bot_user.id:
            text = re.sub(rf"<@!?{user.id}>", f"@{user.display_name}", text)
    return text.strip()


def conversation_id(message: discord.Message, origins: list[Origin]) -> str:
    """A reply chain's id: its oldest message within reach (CONTEXT_MESSAGES), so every reply
    in the chain keeps the version that answered it; a message that replies to nothing starts
    a conversation of its own."""
    first = origins[0].message_id if message.reference is not None and origins else None
    return str(first if first is not None else message.id)


class Chat(commands.Cog):
    def __init__(self, bot):
        self.bot = bot
        self.settings = bot.settings
        self.conversation: Conversation = bot.conversation
        self.cooldowns: Cooldowns = bot.cooldowns
        self.deletions: Deletions = bot.deletions
        self.writes = WriteSchedulers(bot)
        self._mute_logged: set[int] = set()  # channels where "cannot answer" was logged

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
        if not permissions.may(message.channel, "read_message_history"):
            return None
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
        if mentions_bot(message, me):
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
        elif limit and permissions.may(message.channel, "read_message_history"):
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
                if self._attachments_only_for_me(message):
                    await self._note_attachments(message)
                return
        except StoreUnavailable as error:  # cannot tell whether /chat is on here: stay quiet
            log.warning("message %s in channel %s not answered: the store is unavailable (%s)",
                        message.id, message.channel.id, error)
            return
        if missing := permissions.missing_to_answer(message.channel):
            return self._cannot_answer(message.channel, missing)
        try:
            if not await self.cooldowns.claim(message.author.id):
                # Say "wait" once per cooldown window, so a burst of messages is not echoed.
                if await self.cooldowns.claim(message.author.id, "notice"):
                    await self._send_quietly(message, COOLDOWN_REPLY.format(
                        seconds=self.settings.cooldown_seconds))
                return
            writes = self.writes.of(message.channel.id)
            if not writes.admit():
                return await self._say_busy(message, writes)
            try:
                if message.attachments:
                    await self._note_attachments(message)
                await self.answer(message, writes)
            finally:
                writes.release()
        except StoreUnavailable as error:
            log.warning("message %s in channel %s not answered: the store is unavailable (%s)",
                        message.id, message.channel.id, error)
            await self._send_quietly(message, STORE_REPLY)

    def _attachments_only_for_me(self, message: discord.Message) -> bool:
        """Files and no words, sent to the bot (a mention, or a DM it would answer)."""
        if not message.attachments or message.author.bot or message.is_system():
            return False
        if plain_text(message, self.bot.user):
            return False
        if message.guild is None:
            return self.settings.dm_enabled
        return mentions_bot(message, self.bot.user)

    async def _note_attachments(self, message: discord.Message) -> None:
        """Say that attachments are not read (once per cooldown window per person)."""
        if permissions.missing_to_answer(message.channel):
            return
        if await self.cooldowns.claim(message.author.id, "attachments"):
            await self._send_quietly(message, ATTACHMENTS_IGNORED)

    def _cannot_answer(self, channel, missing: list[str]) -> None:
        """No generation where the reply could not be sent (logged once per channel)."""
        if channel.id not in self._mute_logged:
            if len(self._mute_logged) > 4096:
                self._mute_logged.clear()
            self._mute_logged.add(channel.id)
            log.warning("not answering in channel %s: the bot lacks %s there", channel.id,
                        ", ".join(missing))

    async def _send_quietly(self, message: discord.Message, text: str) -> None:
        try:
            await send_reply(message, text, self.writes.of(message.channel.id))
        except discord.HTTPException as error:
            log.warning("could not answer in channel %s: %s", message.channel.id, error)

    async def _say_busy(self, message: discord.Message, writes: ChannelWrites) -> None:
        """Past the cap of replies in flight: a short note, only when the channel's budget has
        room at once (a busy channel must not queue up notes)."""
        log.info("message %s in channel %s not answered: %d replies in flight there",
                 message.id, message.channel.id, writes.in_flight)
        if not writes.try_take():
            return
        try:
            await send_reply(message, BUSY_REPLY)  # its write is taken already
        except discord.HTTPException as error:
            log.warning("could not answer in channel %s: %s", message.channel.id, error)

    async def answer(self, message: discord.Message, writes: ChannelWrites) -> None:
        turns, origins = await self.conversation_turns(message)
        async with ChannelReply(message, writes) as sink:
            try:
                await self.conversation.reply(
                    turns, sink, source="discord", user_id=message.author.id,
                    guild_id=message.guild.id if message.guild else None,
                    channel_id=message.channel.id, parent_id=parent_of(message.channel),
                    origins=origins, user_message_id=message.id,
                    conversation=conversation_id(message, origins))
            except discord.HTTPException as error:  # e.g. its message deleted meanwhile
                log.error("could not send a reply in channel %s: %s", message.channel.id,
                          error)

    # --- deleted messages ---------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.deletions.deleted({payload.message_id})

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent
                                         ) -> None:
        await self.deletions.deleted(set(payload.message_ids))


async def setup(bot) -> None:
    await bot.add_cog(Chat(bot))
