"""How a reply reaches Discord, in one place: split to the 2,000-character limit (never inside a
``` block without closing and reopening it), sent as a reply that survives its question being
deleted, and 👍/👎 under every piece so moderators can rate any of them (every piece maps to one
exchange in the store).

A reply shown while it is decoded (`LiveReply`) is sent once its first words exist, then edited
at most once per EDIT_INTERVAL_S, and continues in a new message past 2,000 characters; its
last writes carry the whole reply, and only then is it stored and are the 👍/👎 added. Every
send and edit goes through its channel's write budget (channel_writes.py), shared with the
other replies there: while streaming a write is skipped when the budget has no room (a later
one shows the text so far), the last writes wait their turn. `ChannelReply` is that as the
Discord sink of `Conversation.reply`, with "typing..." until the first words.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from contextlib import AsyncExitStack, asynccontextmanager

import discord

from bot.core.store import Exchange
from bot.frontends.discord import channel_writes, permissions
from bot.frontends.discord.channel_writes import ChannelWrites
from bot.service.drafts import Failure, cut_off

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
THUMBS_UP = "\N{THUMBS UP SIGN}"
THUMBS_DOWN = "\N{THUMBS DOWN SIGN}"
RATING_OF = {THUMBS_UP: 1, THUMBS_DOWN: -1}
# Skin-tone modifiers (U+1F3FB..U+1F3FF) and the emoji presentation selector do not change
# what a 👍 means.
_EMOJI_VARIATION = re.compile("[\U0001F3FB-\U0001F3FF\uFE0F]")

EDIT_INTERVAL_S = 1.0  # at most one write (send or edit) per reply this often while it streams

FENCE = "```"
_CLOSE = "\n" + FENCE
_LANGUAGE = re.compile(r"[\w+#.-]{1,32}")


def rating_of(emoji: discord.PartialEmoji | str) -> int | None:
    """+1 for 👍, -1 for 👎 (in any skin tone), None for any other reaction."""
    return RATING_OF.get(_EMOJI_VARIATION.sub("", str(emoji)))


def open_fence(text: str) -> str | None:
    """The opening fence (with its language, e.g. "```py") of a ``` block that `text` leaves
    open, or None when every block in it is closed."""
    opener, at = None, text.find(FENCE)
    while at != -1:
        if opener is None:
            end = text.find("\n", at + len(FENCE))
            info = text[at + len(FENCE):end] if end != -1 else ""
            opener = FENCE + (info if _LANGUAGE.fullmatch(info) else "")
        else:
            opener = None
        at = text.find(FENCE, at + len(FENCE))
    return opener


# What joins the character before it into one visible character: variation selectors, the
# zero-width joiner of emoji sequences, skin-tone modifiers (combining marks are found by
# unicodedata).
_JOINERS = re.compile("[\uFE00-\uFE0F\u200D\U0001F3FB-\U0001F3FF\U000E0020-\U000E007F]")
_MOST_JOINED = 16  # a hard cut moves back at most this far to keep a character whole


def _inside_character(text: str, at: int) -> bool:
    """Whether cutting `text` at `at` would split one visible character (a letter from its
    accent, an emoji from its modifier or ZWJ sequence)."""
    if not 0 < at < len(text):
        return False
    after = text[at]
    return (bool(unicodedata.combining(after)) or unicodedata.category(after) == "Me"
            or bool(_JOINERS.match(after)) or text[at - 1] == "\u200d")


def _cut(text: str, room: int, keep: int) -> tuple[int, bool]:
    """Where to cut `text` to at most `room` characters (never before `keep`): at a line break
    when one is in the second half, else at a space there, else hard; and whether it was at
    such a break. A hard cut never splits a ``` apart, nor one visible character."""
    for separator in ("\n", " "):
        soft = text.rfind(separator, 0, room + 1)
        if soft > max(room // 2, keep):
            return soft, True
    cut = room
    for _ in range(_MOST_JOINED):
        if cut - 1 <= keep or not _inside_character(text, cut):
            break
        cut -= 1
    for back in (1, 2):  # a fence starting just before the cut would be cut in two
        if text.startswith(FENCE, cut - back) and cut - back > keep:
            cut -= back
            break
    return cut, False


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Pieces of at most `limit` characters, cut at a line break or space where there is one.

    A piece that ends inside a ``` block closes it, and the next piece opens it again with the
    same language, so each piece shows its code as code.
    """
    pieces: list[str] = []
    reopen = ""
    while len(reopen + text) > limit:
        body = reopen + text
        cut, soft = _cut(body, limit, len(reopen))
        opener = open_fence(body[:cut])
        if opener is not None:  # room for the closing fence
            cut, soft = _cut(body, limit - len(_CLOSE), len(reopen))
            opener = open_fence(body[:cut])
        pieces.append(body[:cut] + (_CLOSE if opener is not None else ""))
        rest = body[cut + 1:] if soft else body[cut:]
        # Outside code, the next piece starts at a word; inside, indentation is kept.
        text = rest if opener is not None else rest.lstrip("\n ")
        reopen = opener + "\n" if opener is not None else ""
    body = reopen + text
    if body or not pieces:
        pieces.append(body)
    return pieces


async def send_reply(message: discord.Message, text: str,
                     writes: ChannelWrites | None = None) -> list[discord.Message]:
    """Send `text` as a reply to `message`, split to Discord's limit; returns every piece sent.
    Each piece waits its turn in the channel's `writes` budget when one is given.

    The reference says `fail_if_not_exists=False`: a question deleted while the bot generated
    still gets its answer (Discord would otherwise refuse the reply with HTTP 400). Mentions
    are disabled by the client's `allowed_mentions` (AllowedMentions.none()), so a generated
    "@everyone" or "<@id>" is shown but never pings; the reply does not ping the author either.
    """
    reference = message.to_reference(fail_if_not_exists=False)
    sent = []
    for number, piece in enumerate(split_message(text)):
        if writes is not None:
            await writes.take()
        sent.append(await message.channel.send(piece,
                                               reference=reference if number == 0 else None))
    return sent


async def add_rating_reactions(pieces: list[discord.Message]) -> None:
    """👍 and 👎 under every piece of a reply (a moderator may rate any of them)."""
    try:
        for piece in pieces:
            for emoji in (THUMBS_UP, THUMBS_DOWN):
                await piece.add_reaction(emoji)
    except discord.HTTPException as error:  # no Add Reactions: ratings can still be added
        log.warning("could not add rating reactions: %s", error)


class LiveReply:
    """A reply to `question` shown while it is decoded: `show` the text so far as often as
    pieces come (writes are throttled and share the channel's `writes` budget), then `finish`
    with the whole text."""

    def __init__(self, question: discord.Message, writes: ChannelWrites):
        self.question = question
        self.writes = writes
        self.messages: list[discord.Message] = []  # sent so far, in order
        self._shown: list[str] = []  # what each message shows now
        self._last_write = 0.0

    @property
    def started(self) -> bool:
        """Whether a message is out (then "typing..." is no longer needed)."""
        return bool(self.messages)

    async def show(self, text: str) -> None:
        """Show `text`, the reply so far: the first message once it has words, later ones and
        edits when EDIT_INTERVAL_S has passed since the last write and the channel's budget
        has room (else the next call or `finish` shows it)."""
        text = text.strip()
        if not text:
            return
        if self.messages and channel_writes.now() - self._last_write < EDIT_INTERVAL_S:
            return
        step = self._next_write(split_message(text))
        if step is not None and self.writes.try_take():
            await self._write(*step)

    async def finish(self, text: str) -> list[discord.Message]:
        """Show the whole `text` (every write it still needs, each in its turn of the channel's
        budget); returns the messages that hold it. Messages beyond it (a reply that ended
        shorter than it was shown) are deleted."""
        pieces = split_message(text.strip())
        while (step := self._next_write(pieces)) is not None:
            await self.writes.take()
            await self._write(*step)
        extra = self.messages[len(pieces):]
        del self.messages[len(pieces):], self._shown[len(pieces):]
        for message in extra:
            try:
                await message.delete()
            except discord.HTTPException as error:  # the reply itself is whole: keep it
                log.warning("could not delete message %s past a reply's end: %s", message.id,
                            error)
        return list(self.messages)

    def _next_write(self, pieces: list[str]) -> tuple[int, str] | None:
        """The first send or edit that brings the messages closer to `pieces` (as the piece's
        number and text); None when they show them already. Earlier messages settle first:
        one past 2,000 characters is edited to its final piece before the next one is sent."""
        for number, piece in enumerate(pieces):
            if number == len(self.messages) or self._shown[number] != piece:
                return number, piece
        return None

    async def _write(self, number: int, piece: str) -> None:
        if number == len(self.messages):
            reference = (self.question.to_reference(fail_if_not_exists=False)
                         if number == 0 else None)
            self.messages.append(await self.question.channel.send(piece, reference=reference))
            self._shown.append(piece)
        else:
            self.messages[number] = await self.messages[number].edit(content=piece)
            self._shown[number] = piece
        self._last_write = channel_writes.now()


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


class ChannelReply:
    """A reply to `question` in its channel (writing within the channel's `writes` budget), the
    Discord ReplySink (bot/service/conversation.py):
    "typing..." from the start of generation until its first words are out, then a LiveReply;
    once kept, 👍/👎 under every piece (none in DMs: ratings are a server's). Used as `async
    with`, so "typing..." stops whatever happens."""

    def __init__(self, question: discord.Message, writes: ChannelWrites):
        self.question = question
        self.writes = writes
        self.live = LiveReply(question, writes)
        self._typing = AsyncExitStack()

    async def __aenter__(self) -> ChannelReply:
        return self

    async def __aexit__(self, *exc) -> None:
        await self._typing.aclose()

    async def start(self, version: str) -> None:
        await self._typing.enter_async_context(typing_in(self.question.channel))

    async def show(self, text: str) -> None:
        await self.live.show(text)
        if self.live.started:
            await self._typing.aclose()

    async def finish(self, text: str) -> list[int]:
        await self._typing.aclose()
        return [message.id for message in await self.live.finish(text)]

    async def fail(self, failure: Failure, text: str) -> None:
        """The part shown ends with why the rest is missing; with nothing shown, the apology."""
        await self._typing.aclose()
        try:
            if self.live.started:
                await self.live.finish(cut_off(text, failure.reason))
            else:
                await send_reply(self.question, failure.text, self.writes)
        except discord.HTTPException as error:
            log.warning("could not end a reply in channel %s: %s", self.question.channel.id,
                        error)

    async def kept(self, exchange: Exchange) -> None:
        if self.question.guild is None:
            return
        if permissions.may(self.question.channel, "add_reactions"):
            await add_rating_reactions(self.live.messages)
        else:  # moderators can still add 👍/👎 themselves
            log.info("no rating reactions in channel %s: the bot lacks Add Reactions",
                     self.question.channel.id)
