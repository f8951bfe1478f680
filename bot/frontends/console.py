"""The bot in a terminal: the same conversation path and commands, no Discord token needed.

`Console(runtime).handle_line(line)` answers one line (a chat message or a command) and is what
the demo drives; `run_console` wraps it for `python -m bot console`, reading standard input
(piped or typed) while the runtime follows the adapter registry, and printing each reply piece
by piece as it is decoded (a Console given `write` shows replies that way: its ConsoleSink).
The console speaks in one server and channel as one user (`--guild`, `--channel`, `--user`; by
default the home server, or 0 when HOME_GUILD_ID is unset, channel 0 and "console-user"), and
that user is an admin and moderator there.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from bot.core.dialogue import Turn
from bot.core.store import Exchange
from bot.core.text import clean_text
from bot.runtime import Runtime
from bot.service.actions import Answer
from bot.service.answer_text import refusal_line
from bot.service.canary_actions import canary_line
from bot.service.drafts import CUT_NOTES, Failure
from bot.service.trust_actions import cycle_lines

log = logging.getLogger(__name__)

CONSOLE_USER = "console-user"  # hashed by the store like any user id
CONSOLE_GUILD = 0  # the console's server when HOME_GUILD_ID is unset
CONSOLE_CHANNEL = 0
ANY = "*"  # a command that takes any words after its name

HELP = ("commands: /new | /style set [server] <prefix> | /style show | /style clear [server] | "
        "/rate up|down | /teach <better reply> | /adapter status|rollback|promote|abort | "
        "/train now | "
        "/review [approve|reject <id>] | /moderators distrust|trust <user> | "
        "/exam add|remove | /stats | /forget me | /quit")

# A command's work: (the words after its name, those after its subcommand) -> its answer, or
# None when the words are incomplete.
Act = Callable[[str, str], Awaitable[str | None]]


class Quit(Exception):
    """`/quit` was typed."""


class ConsoleSink:
    """A reply in a terminal (a ReplySink): written piece by piece through `write` as it is
    decoded, the head `bot [VERSION]: ` with its first words; without `write`, `answer` holds
    the whole line. `answer` is what the console returns for the reply ("" once written)."""

    def __init__(self, write: Callable[[str], None] | None = None):
        self.write = write
        self.answer = ""
        self._head = ""
        self._shown = ""  # what was written so far (with its head)
        self._seen = 0  # characters of the reply taken so far

    async def start(self, version: str) -> None:
        self._head = f"bot [{version}]: "

    async def show(self, text: str) -> None:
        piece, self._seen = text[self._seen:], len(text)
        if not self._shown:  # the head comes with the first words, not before
            piece = piece.lstrip()
            if not piece:
                return
            piece = self._head + piece
        self._shown += piece
        if self.write is not None:
            self.write(piece)

    async def finish(self, text: str) -> list[int]:
        return []  # the pieces are out; the line ends once the reply is kept

    async def fail(self, failure: Failure, text: str) -> None:
        if not self._shown:
            self.answer = f"bot: {failure.text}"
        else:
            self._end(self._shown.rstrip(), f" {CUT_NOTES[failure.reason]}")

    async def kept(self, exchange: Exchange) -> None:
        whole = f"bot [{exchange.adapter_version}]: {exchange.reply}"
        if self._shown:
            self._end(self._shown)
        else:  # nothing but blanks decoded: the stored reply is the fallback, not yet shown
            self._end("", whole)

    def _end(self, shown: str, rest: str = "") -> None:
        """The end of a reply: `rest` written (with the line break) after the pieces shown when
        they are written, else `shown + rest` is the whole answer."""
        if self.write is None:
            self.answer = shown + rest
        else:
            self.write(rest + "\n")


def _said(act: Callable[[], Awaitable[Answer]]) -> Act:
    """An act whose answer is shown as it is worded."""
    async def run(rest: str, arg: str) -> str:
        return (await act()).text
    return run


class Console:
    def __init__(self, runtime: Runtime, *, guild_id: int | None = None,
                 channel_id: int = CONSOLE_CHANNEL, user: str = CONSOLE_USER,
                 write: Callable[[str], None] | None = None):
        """`write`: where a reply's pieces go as they are decoded (then `handle_line` returns
        "" for a reply it wrote); without it, `handle_line` returns the whole reply."""
        settings = runtime.settings
        self.settings = settings
        self.write = write
        self.conversation, self.actions = runtime.conversation, runtime.actions
        self.guild_id = guild_id if guild_id is not None else (
            settings.home_guild_id if settings.home_guild_id is not None else CONSOLE_GUILD)
        self.channel_id, self.user = channel_id, user
        self.turns: list[Turn] = []  # this session's dialogue, oldest first
        self.conversations = 0  # /new starts the next one
        self.last: Exchange | None = None
        self._acts = self._commands()

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
        sink = ConsoleSink(self.write)
        result = await self.conversation.reply(turns, sink, source="console", user_id=self.user,
                                               guild_id=self.guild_id,
                                               channel_id=self.channel_id,
                                               conversation=self.conversation_id)
        if isinstance(result, Exchange):
            self.last = result
            self.turns = [*result.turns(), Turn("bot", result.reply)]  # as stored: clipped
        return sink.answer

    @property
    def conversation_id(self) -> str:
        """This conversation's id: the same for each line until `/new`."""
        return f"console:{self.channel_id}:{self.user}:{self.conversations}"

    async def command(self, line: str) -> str:
        name, _, rest = line[1:].partition(" ")
        sub, _, arg = rest.strip().partition(" ")
        name, sub = name.lower(), sub.lower()
        act = self._acts.get((name, sub)) or self._acts.get((name, ANY))
        answer = await act(rest.strip(), arg.strip()) if act is not None else None
        if answer is None:
            return f"unknown or incomplete command {line.split()[0]!r}; {HELP}"
        return answer

    def _commands(self) -> dict[tuple[str, str], Act]:
        """(command, subcommand or ANY) -> what it does."""
        actions, guild = self.actions, self.guild_id
        return {
            ("quit", ANY): self._quit, ("exit", ANY): self._quit,
            ("new", ANY): self._new, ("help", ANY): self._help,
            ("style", "set"): self._style_set, ("style", "clear"): self._style_clear,
            ("style", "show"): _said(lambda: actions.show_style(guild, self.channel_id)),
            ("rate", "up"): lambda rest, arg: self._rate(1),
            ("rate", "down"): lambda rest, arg: self._rate(-1),
            ("teach", ANY): self._teach,
            ("adapter", "status"): _said(lambda: actions.adapter_status(guild)),
            ("adapter", "rollback"): _said(lambda: actions.rollback(guild)),
            ("adapter", "promote"): _said(lambda: actions.canary.promote(guild)),
            ("adapter", "abort"): _said(lambda: actions.canary.abort(guild)),
            ("train", "now"): _said(lambda: actions.train_now(guild, "console")),
            ("stats", ANY): _said(lambda: actions.stats(guild)),
            ("forget", "me"): self._forget,
            ("review", ""): _said(lambda: actions.trust.review_list(guild)),
            ("review", "list"): _said(lambda: actions.trust.review_list(guild)),
            ("review", "approve"): self._decided(actions.trust.approve),
            ("review", "reject"): self._decided(actions.trust.reject),
            ("moderators", "distrust"): self._named(actions.trust.distrust),
            ("moderators", "trust"): self._named(actions.trust.trust),
            ("exam", "add"): self._on_last(actions.trust.exam_add),
            ("exam", "remove"): self._on_last(actions.trust.exam_remove),
        }

    def _decided(self, act: Callable[[int, str], Awaitable[Answer]]) -> Act:
        """`/review approve|reject ID`."""
        async def run(rest: str, arg: str) -> str | None:
            return (await act(self.guild_id, arg)).text if arg else None
        return run

    def _named(self, act: Callable[[int, str, str], Awaitable[Answer]]) -> Act:
        """`/moderators distrust|trust NAME`: console users are named by their user name."""
        async def run(rest: str, arg: str) -> str | None:
            return (await act(self.guild_id, arg, arg)).text if arg else None
        return run

    def _on_last(self, act: Callable[[int, Exchange | None], Awaitable[Answer]]) -> Act:
        """`/exam add|remove`: on the last reply."""
        async def run(rest: str, arg: str) -> str:
            if self.last is None:
                return "no reply yet: chat first, then /exam add puts the last reply on the exam"
            return (await act(self.guild_id, self.last)).text
        return run

    async def _quit(self, rest: str, arg: str) -> str:
        raise Quit()

    async def _new(self, rest: str, arg: str) -> str:
        self.turns, self.last = [], None
        self.conversations += 1
        return "started a new conversation: earlier lines are no longer its context"

    async def _help(self, rest: str, arg: str) -> str:
        return HELP

    async def _forget(self, rest: str, arg: str) -> str:
        self.turns, self.last = [], None
        return (await self.actions.forget(self.user)).text

    def _scope(self, text: str) -> tuple[tuple[str, int], str]:
        """(scope, its id) and the rest of `text`: a first word `server` or `channel` names the
        scope (default: this channel)."""
        first, _, rest = text.strip().partition(" ")
        if first.lower() == "server":
            return ("guild", self.guild_id), rest.strip()
        if first.lower() == "channel":
            return ("channel", self.channel_id), rest.strip()
        return ("channel", self.channel_id), text.strip()

    async def _style_set(self, rest: str, arg: str) -> str | None:
        if not arg:
            return None
        where, prefix = self._scope(arg)
        if not prefix.strip():  # "/style set channel" names a scope, not a style
            return "usage: /style set [channel|server] <prefix>"
        return (await self.actions.set_style(*where, prefix, self.user)).text

    async def _style_clear(self, rest: str, arg: str) -> str:
        where, _ = self._scope(arg)
        return (await self.actions.clear_style(*where)).text

    async def _rate(self, value: int) -> str:
        if self.last is None:
            return "nothing to rate yet: chat first, then /rate up or /rate down"
        answer = await self.actions.rate(self.guild_id, self.last.id, self.user, value,
                                         subject="the last reply")
        return answer.text

    async def _teach(self, rest: str, arg: str) -> str | None:
        if not rest:
            return None
        if self.last is None:
            return "nothing to teach yet: chat first, then /teach <the better reply>"
        answer = await self.actions.teach(self.guild_id, self.last.id, self.user, rest,
                                          moderator_name=self.user)
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

        console = Console(runtime, guild_id=guild_id, channel_id=channel_id, user=user,
                          write=write)

        async def announce(event, record) -> None:
            if event.tenant != console.guild_id:
                return
            if event.kind == "cycle":
                text = "\n".join(await cycle_lines(runtime.store, event))
                print(f"[training cycle: {text}]", file=stdout, flush=True)
                return
            if event.kind == "canary":
                print(f"[{canary_line(event)}]", file=stdout, flush=True)
                return
            text = (refusal_line(event.version, event.reason, event.previous)
                    if event.kind == "refused" else f"{event.kind}: now serving {event.version}")
            print(f"[adapter {text}]", file=stdout, flush=True)

        runtime.on_change(announce)
        if stdin.isatty():
            version = runtime.router.version_for(console.guild_id)
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
