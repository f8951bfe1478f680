"""Requests turned away because the queue is full: counted, and a burst of them logged as one
line once refusals have stopped for `quiet_s` (a flood must not flood the log too)."""

from __future__ import annotations

import asyncio
import logging
import time

from bot.core.metrics import Metrics


class Refusals:
    def __init__(self, queue_max: int, quiet_s: float, log: logging.Logger, metrics: Metrics):
        self.count = 0  # requests turned away since start
        self.metrics = metrics
        self._queue_max, self._quiet_s, self._log = queue_max, quiet_s, log
        self._burst: list[float] = []  # [first refusal, last refusal, count] of this burst
        self._timer: asyncio.TimerHandle | None = None

    def add(self) -> None:
        """Count a refusal (on the event loop)."""
        self.count += 1
        self.metrics.requests_refused.inc()
        now = time.monotonic()
        if self._burst:
            self._burst[1], self._burst[2] = now, self._burst[2] + 1
            return
        self._burst = [now, now, 1]
        self._timer = asyncio.get_running_loop().call_later(self._quiet_s, self._end_burst)

    def close(self) -> None:
        """Log the burst in progress now."""
        if self._timer is not None:
            self._timer.cancel()
        self._end_burst(closing=True)

    def _end_burst(self, *, closing: bool = False) -> None:
        if not self._burst:
            return
        first, last, count = self._burst
        wait = last + self._quiet_s - time.monotonic()
        if wait > 0 and not closing:  # still refusing: look again once it has been quiet
            self._timer = asyncio.get_running_loop().call_later(wait, self._end_burst)
            return
        self._burst, self._timer = [], None
        self._log.warning("generation queue full (%d waiting): turned away %d request(s) over "
                          "%.1f s", self._queue_max, count, last - first)
