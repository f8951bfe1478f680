"""The bot in a terminal: the same conversation path and commands, no Discord token needed.

`Console(settings, store, generator).handle_line(line)` answers one line (a chat message or a
command) and is what the demo drives; `run_console` wraps it for `python -m bot console`,
reading standard input (piped or typed) while following the adapter registry. The console user
is an admin and moderator of the one channel "console".
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TextIO

from bot.actions import Actions
from bot.conversation import Conversation, Failure
from bot.dialogue import Turn
from bot.generation import Generator
from bot.runtime import Runtime
from bot.store import Exchange, Store
from bot.text import clean_text

log = logging.getLogger(__name__)

CONSOLE_USER = "console-user"  # hashed by the store like any user id
CONSOLE_GUILD: int | None = None
CONSOLE_CHANNEL = 0

HELP = ("commands: /style set <prefix> | /style show | /style clear | /rate up|down | "
        "/teach <better reply> | /adapter status|rollback | /train now | /stats | "
        "/forget me | /quit")


class Quit(Exception):
    """`/quit` was typed."""


class Console:
    def __init__(self, settings, store: Store, generator: Generator):
        self.settings = settings
        self.conversation = Conversation(settings, store, generator)
        self.actions = Actions(settings, store, generator)
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
        result = await self.conversation.chat(turns, source="console", user_id=CONSOLE_USER,
                                              guild_id=CONSOLE_GUILD, channel_id=CONSOLE_CHANNEL)
        if isinstance(result, Failure):
            return f"bot: {result.text}"
        self.last = result
        self.turns = [*result.turns(), Turn("bot", result.reply)]  # as stored: clipped, clean
        return f"bot [{result.adapter_version}]: {result.reply}"

    async def command(self, line: str) -> str:
        name, _, rest = line[1:].partition(" ")
        sub, _, arg = rest.strip().partition(" ")
        arg = arg.strip()
        match name.lower(), sub.lower():
            case ("quit" | "exit"), _:
                raise Quit()
            case "style", "set" if arg:
                return await self._style_set(arg)
            case "style", "show":
                return (await self.actions.show_style(CONSOLE_GUILD, CONSOLE_CHANNEL)).text
            case "style", "clear":
                return (await self.actions.clear_style("channel", CONSOLE_CHANNEL)).text
            case "rate", ("up" | "down"):
                return await self._rate(1 if sub.lower() == "up" else -1)
            case "teach", _ if rest.strip():
                return await self._teach(rest.strip())
            case "adapter", "status":
                return (await self.actions.adapter_status()).text
            case "adapter", "rollback":
                return (await self.actions.rollback()).text
            case "train", "now":
                return (await self.actions.train_now("console")).text
            case "stats", _:
                return (await self.actions.stats()).text
            case "forget", "me":
                self.turns, self.last = [], None
                return (await self.actions.forget(CONSOLE_USER)).text
            case "help", _:
                return HELP
        return f"unknown or incomplete command {line.split()[0]!r}; {HELP}"

    async def _style_set(self, text: str) -> str:
        # The console has one channel and no server: `server` scope is the channel's too.
        scope, _, prefix = text.partition(" ")
        if scope.lower() in ("channel", "server"):
            if not prefix.strip():  # "/style set channel" names a scope, not a style
                return "usage: /style set [channel|server] <prefix>"
            text = prefix
        answer = await self.actions.set_style("channel", CONSOLE_CHANNEL, text, CONSOLE_USER)
        return answer.text

    async def _rate(self, value: int) -> str:
        if self.last is None:
            return "nothing to rate yet: chat first, then /rate up or /rate down"
        answer = await self.actions.rate(self.last.id, CONSOLE_USER, value,
                                         subject="the last reply")
        return answer.text

    async def _teach(self, text: str) -> str:
        if self.last is None:
            return "nothing to teach yet: chat first, then /teach <the better reply>"
        answer = await self.actions.teach(self.last.id, CONSOLE_USER, text)
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


async def run_console(settings, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """The interactive (or piped) console; returns the exit status."""
    async with Runtime(settings) as runtime:

        async def announce(event, record) -> None:
            print(f"[adapter {event.kind}: now serving {event.version}]", file=stdout, flush=True)

        runtime.on_change(announce)
        console = Console(settings, runtime.store, runtime.generator)
        if stdin.isatty():
            print(f"chatting as the console user (adapter {runtime.generator.active_version}); "
                  f"{HELP}", file=stdout, flush=True)
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
