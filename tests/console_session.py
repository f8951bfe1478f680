"""`python -m bot console`'s loop (run_console) in-process, reading a pipe the test writes to,
so a test can act (publish an adapter, say) between the lines a user types."""

from __future__ import annotations

import asyncio
import io
import os

from bot.frontends.console import run_console


class PipedConsole:
    """run_console on `settings`: `say` lines, `wait_for` text in its output (`out`), `end`."""

    def __init__(self, settings):
        read_fd, write_fd = os.pipe()
        self._stdin, self._feed = os.fdopen(read_fd, "r"), os.fdopen(write_fd, "w")
        self.out = io.StringIO()
        self._session = asyncio.create_task(run_console(settings, stdin=self._stdin,
                                                        stdout=self.out))

    def say(self, *lines: str) -> None:
        self._feed.write("".join(f"{line}\n" for line in lines))
        self._feed.flush()

    async def wait_for(self, text: str, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while text not in self.out.getvalue():
                await asyncio.sleep(0.05)

    async def end(self) -> int:
        """Close its input; the exit status run_console returns."""
        self._feed.close()
        try:
            return await asyncio.wait_for(self._session, 30)
        finally:
            self._stdin.close()
