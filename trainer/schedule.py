"""`python -m trainer run`: a training cycle every TRAIN_INTERVAL_MINUTES, and `/train now`.

APScheduler 3.x with its memory job store (its Redis job store would keep pickles): the jobs are
defined here at start-up. One job runs, on the interval, a cycle for each server that is due
(max_instances 1, coalesce, so a slow round never overlaps or piles up); another polls the store
for servers that asked `/train now`. Both go through one in-process guard, one server at a time;
each server's Redis lock keeps other trainer processes off that server. A third judges each
server's canary every minute (trainer/canary.py), under the same per-server lock. With
METRICS_PORT set, the cycles' outcomes, the gate's refusals and the cycles' durations are
served to Prometheus.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from datetime import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.core.canary_rule import Verdict
from bot.core.metrics import Metrics
from bot.core.store import Store
from trainer.canary import judge_canaries
from trainer.cycle import due_tenants, run_cycle
from trainer.outcome import CycleOutcome

log = logging.getLogger(__name__)

REQUEST_POLL_SECONDS = 15
CANARY_CHECK_SECONDS = 60


class TrainerService:
    """The cycles of one trainer process: one server at a time, never two runs at once.

    Each server has its own Redis lock, so several trainer processes share the servers: one
    that finds a server's lock held skips it and goes on to the next.
    """

    def __init__(self, settings, store: Store, metrics: Metrics | None = None):
        self.settings = settings
        self.store = store
        self.metrics = metrics or Metrics()
        self._running = asyncio.Lock()

    async def scheduled_cycle(self, *, requested_only: bool = False) -> list[CycleOutcome]:
        """A cycle for each server that is due (see trainer.cycle.due_tenants)."""
        if self._running.locked():
            return []
        outcomes = []
        async with self._running:
            for tenant in await due_tenants(self.settings, self.store,
                                            requested_only=requested_only):
                started = time.monotonic()
                try:
                    outcome = await run_cycle(self.settings, self.store, tenant, progress=False)
                except Exception:  # keep the schedule alive; the next cycle starts clean
                    log.exception("training cycle of server %s failed", tenant)
                    self.metrics.cycle("failed", time.monotonic() - started)
                    continue
                self.metrics.cycle(outcome.outcome, time.monotonic() - started,
                                   outcome.gate.get("failed"))
                outcomes.append(outcome)
        return outcomes

    async def poll_request(self) -> list[CycleOutcome]:
        """Run a cycle now for each server that asked for one (`/train now`; the cycle settles
        the request when it ends). A server whose lock another trainer holds waits for it,
        rather than recording a skipped run every poll."""
        return await self.scheduled_cycle(requested_only=True)

    async def judge_canaries(self) -> dict[int, Verdict]:
        """Promote or roll back the canaries whose live ratings decide (trainer/canary.py)."""
        return await judge_canaries(self.settings, self.store)


def build_scheduler(service: TrainerService, settings) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler()
    # Never two runs of a job at once, and runs missed while one was busy collapse into one.
    once = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 60}
    scheduler.add_job(service.scheduled_cycle,
                      IntervalTrigger(minutes=settings.train_interval_minutes),
                      id="training-cycle", next_run_time=datetime.now(), **once)
    scheduler.add_job(service.poll_request, IntervalTrigger(seconds=REQUEST_POLL_SECONDS),
                      id="train-now-poll", **once)
    scheduler.add_job(service.judge_canaries, IntervalTrigger(seconds=CANARY_CHECK_SECONDS),
                      id="canary-judge", **once)
    return scheduler


async def serve(settings) -> None:
    """Run the schedule until SIGINT/SIGTERM."""
    metrics = Metrics()
    metrics_server = metrics.serve(settings.metrics_port)
    store = Store.from_settings(settings)
    await store.ping()
    scheduler = build_scheduler(TrainerService(settings, store, metrics), settings)
    # Its INFO lines would repeat every poll; the cycle logs what happened.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    scheduler.start()
    log.info("trainer running: a cycle every %d minute(s), train-now requests checked every "
             "%d s", settings.train_interval_minutes, REQUEST_POLL_SECONDS)
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
        await store.close()
        metrics.close(metrics_server)
        log.info("trainer stopped")
