"""The bot in a terminal: the same conversation path and commands, no Discord token needed.

`Console(settings, store, generator).handle_line(line)` answers one line (a chat message or a
command) and is what the demo drives; `run_console` wraps it for `python -m bot console`,
reading standard input (piped or typed) while following the adapter registry and printing each
reply piece by piece as it is decoded (a Console given `write` shows replies that way). The console
speaks in one server and channel as one user (`--guild`, `--channel`, `--user`; by default the
home server, or 0 when HOME_GUILD_ID is unset, channel 0 and "console-user"), and that user
is an admin and moderator there.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import TextIO

from bot.core.dialogue import Turn
from bot.core.generation import Generator
from bot.core.store import Exchange, Store, StoreUnavailable
from bot.core.text import clean_text
from bot.runtime import Runtime
from bot.service.actions import Actions
from bot.service.answer_text import refusal_line
from bot.service.conversation import CUT_NOTES, STORE_REPLY, Conversation, Failure
from bot.service.follow import Serving

log = logging.getLogger(__name__)

CONSOLE_USER = "console-user"  # hashed by the store like any user id
CONSOLE_GUILD = 0  # the console's server when HOME_GUILD_ID is unset
CONSOLE_CHANNEL = 0

HELP = ("commands: /new | /style set [server] <prefix> | /style show | /style clear [server] | "
        "/rate up|down | /teach <better reply> | /adapter status|rollback | /train now | "
        "/stats | /forget me | /quit")


class Quit(Exception):
    """`/quit` was typed."""


class Console:
    def __init__(self, settings, store: Store, generator: Generator,
                 serving: Serving | None = None, *, guild_id: int | None = None,
                 channel_id: int = CONSOLE_CHANNEL, user: str = CONSOLE_USER,
                 write: Callable[[str], None] | None = None):
        """`write`: where a reply's pieces go as they are decoded (then `handle_line` returns
        "" for a reply it wrote); without it, `handle_line` returns the whole reply."""
        self.settings = settings
        self.write = write
        self.conversation = Conversation(settings, store, generator, serving)
        self.actions = Actions(settings, store, generator, self.conversation.serving)
        self.guild_id = guild_id if guild_id is not None else (
            settings.home_guild_id if settings.home_guild_id is not None else CONSOLE_GUILD)
        self.channel_id, self.user = channel_id, user
        self.turns: list[Turn] = []  # this session's dialogue, oldest first
        self.last: Exchange | None = None

    async def handle_line(self, line: str) -> str:
        """The answer to one input line; raises Quit on /quit."""
        line = clean_text(line).strip()
        if not line:
            return ""
        if line.startswith("/"):
            return await self.command(line)
        return await self.say(line)

    async def say(self, text: str) -> str:
        keep = self.settings.context_messages
        turns = [*(self.turns[-keep:] if keep else []), Turn("user", text)]
        stream = await self.conversation.stream_draft(turns, guild_id=self.guild_id,
                                                      channel_id=self.channel_id)
        if isinstance(stream, Failure):
            return f"bot: {stream.text}"
        head = f"bot [{stream.version}]: "
        shown = ""  # what was written so far (with its head)
        async for piece in stream:
            if not shown:  # the head comes with the first words, not before
                piece = piece.lstrip()
                if not piece:
                    continue
                piece = head + piece
            shown += piece
            if self.write is not None:
                self.write(piece)
        failure = stream.failure
        if stream.draft is not None:
            try:
                exchange = await self.conversation.keep(stream.draft, source="console",
                                                        user_id=self.user)
            except StoreUnavailable as error:
                log.warning("reply not kept: the store is unavailable (%s)", error)
                failure = Failure("unavailable", STORE_REPLY)
        if failure is not None:
            if not shown:
                return f"bot: {failure.text}"
            return self._end(shown.rstrip(), f" {CUT_NOTES[failure.reason]}")
        self.last = exchange
        self.turns = [*exchange.turns(), Turn("bot", exchange.reply)]  # as stored: clipped
        whole = f"bot [{exchange.adapter_version}]: {exchange.reply}"
        if self.write is None:
            return whole
        # Nothing but blanks decoded: the stored reply is the fallback, not yet shown.
        return self._end(shown) if shown else self._end("", whole)

    def _end(self, shown: str, rest: str = "") -> str:
        """The end of a reply: `rest` written (with the line break) after the pieces shown when
        they are written, else `shown + rest`, the whole answer to return."""
        if self.write is None:
            return shown + rest
        self.write(rest + "\n")
        return ""

    async def command(self, line: str) -> str:
        name, _, rest = line[1:].partition(" ")
        sub, _, arg = rest.strip().partition(" ")
        arg = arg.strip()
        match name.lower(), sub.lower():
            case ("quit" | "exit"), _:
                raise Quit()
            case "new", _:
                self.turns, self.last = [], None
                return "started a new conversation: earlier lines are no longer its context"
            case "style", "set" if arg:
                return await self._style_set(arg)
            case "style", "show":
                return (await self.actions.show_style(self.guild_id, self.channel_id)).text
            case "style", "clear":
                return await self._style_clear(arg)
            case "rate", ("up" | "down"):
                return await self._rate(1 if sub.lower() == "up" else -1)
            case "teach", _ if rest.strip():
                return await self._teach(rest.strip())
            case "adapter", "status":
                return (await self.actions.adapter_status(self.guild_id)).text
            case "adapter", "rollback":
                return (await self.actions.rollback(self.guild_id)).text
            case "train", "now":
                return (await self.actions.train_now(self.guild_id, "console")).text
            case "stats", _:
                return (await self.actions.stats(self.guild_id)).text
            case "forget", "me":
                self.turns, self.last = [], None
                return (await self.actions.forget(self.user)).text
            case "help", _:
                return HELP
        return f"unknown or incomplete command {line.split()[0]!r}; {HELP}"

    def _scope(self, text: str) -> tuple[tuple[str, int], str]:
        """(scope, its id) and the rest of `text`: a first word `server` or `channel` names the
        scope (default: this channel)."""
        first, _, rest = text.strip().partition(" ")
        if first.lower() == "server":
            return ("guild", self.guild_id), rest.strip()
        if first.lower() == "channel":
            return ("channel", self.channel_id), rest.strip()
        return ("channel", self.channel_id), text.strip()

    async def _style_set(self, text: str) -> str:
        where, prefix = self._scope(text)
        if not prefix.strip():  # "/style set channel" names a scope, not a style
            return "usage: /style set [channel|server] <prefix>"
        return (await self.actions.set_style(*where, prefix, self.user)).text

    async def _style_clear(self, text: str) -> str:
        where, _ = self._scope(text)
        return (await self.actions.clear_style(*where)).text

    async def _rate(self, value: int) -> str:
        if self.last is None:
            return "nothing to rate yet: chat first, then /rate up or /rate down"
        answer = await self.actions.rate(self.guild_id, self.last.id, self.user, value,
                                         subject="the last reply")
        return answer.text

    async def _teach(self, text: str) -> str:
        if self.last is None:
            return "nothing to teach yet: chat first, then /teach <the better reply>"
        answer = await self.actions.teach(self.guild_id, self.last.id, self.user, text)
        return "stored your better reply for the last message" if answer.ok else answer.text


async def _lines(stream: TextIO):
    """Lines of `stream`, read in a thread so the adapter follower keeps running meanwhile.

    A terminal or pipe may carry bytes that are not UTF-8: the raw bytes are read (where the
    stream has them) and what does not decode becomes U+FFFD, so no line fails to read.
    """
    loop = asyncio.get_running_loop()
    raw = getattr(stream, "buffer", None)
    while True:
        if raw is not None:
            data = await loop.run_in_executor(None, raw.readline)
            line = data.decode("utf-8", errors="replace")
        else:
            line = clean_text(await loop.run_in_executor(None, stream.readline))
        if not line:
            return
        yield line


async def run_console(settings, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, *,
                      guild_id: int | None = None, channel_id: int = CONSOLE_CHANNEL,
                      user: str = CONSOLE_USER) -> int:
    """The interactive (or piped) console; returns the exit status."""
    async with Runtime(settings) as runtime:
        def write(text: str) -> None:
            stdout.write(text)
            stdout.flush()

        console = Console(settings, runtime.store, runtime.generator, runtime.serving,
                          guild_id=guild_id, channel_id=channel_id, user=user, write=write)

        async def announce(event, record) -> None:
            if event.tenant != console.guild_id:
                return
            text = (refusal_line(event.version, event.reason, event.previous)
                    if event.kind == "refused" else f"{event.kind}: now serving {event.version}")
            print(f"[adapter {text}]", file=stdout, flush=True)

        runtime.on_change(announce)
        if stdin.isatty():
            version = runtime.serving.version_for(console.guild_id)
            print(f"chatting as {user} in server {console.guild_id}, channel {channel_id} "
                  f"(adapter {version}); {HELP}", file=stdout, flush=True)
        async for line in _lines(stdin):
            try:
                answer = await console.handle_line(line)
            except Quit:
                break
            except Exception as error:  # one line for the user and the log, no traceback
                log.error("console line failed: %s: %s", type(error).__name__, error)
                log.debug("console line failed", exc_info=True)
                answer = "sorry, that failed; the log says why"
            if answer:
                print(answer, file=stdout, flush=True)
    return 0
