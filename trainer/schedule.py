"""`python -m trainer run`: a training cycle every TRAIN_INTERVAL_MINUTES, and `/train now`.

APScheduler 3.x with its memory job store (its Redis job store would keep pickles): the jobs are
defined here at start-up. One job runs the cycle on the interval (max_instances 1, coalesce, so
a slow cycle never overlaps or piles up); another polls the store for a "train now" request.
Both go through one in-process guard, and the Redis lock keeps other trainer processes out.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.store import Store
from trainer.cycle import CycleOutcome, run_cycle

log = logging.getLogger(__name__)

REQUEST_POLL_SECONDS = 15


class TrainerService:
    """The cycles of one trainer process, never two at a time."""

    def __init__(self, settings, store: Store):
        self.settings = settings
        self.store = store
        self._running = asyncio.Lock()

    async def scheduled_cycle(self) -> CycleOutcome | None:
        if self._running.locked():
            return None
        async with self._running:
            try:
                return await run_cycle(self.settings, self.store, progress=False)
            except Exception:  # keep the schedule alive; the next cycle starts clean
                log.exception("training cycle failed")
                return None

    async def poll_request(self) -> CycleOutcome | None:
        """Run a cycle now when the bot asked for one (the cycle settles the request when it
        ends). While another trainer's cycle holds the lock the request waits for it, rather
        than recording a skipped run every poll."""
        if self._running.locked() or not await self.store.trainer.training_requested():
            return None
        if await self.store.trainer.lock_held():
            return None
        return await self.scheduled_cycle()


def build_scheduler(service: TrainerService, settings) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler()
    # Never two runs of a job at once, and runs missed while one was busy collapse into one.
    once = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 60}
    scheduler.add_job(service.scheduled_cycle,
                      IntervalTrigger(minutes=settings.train_interval_minutes),
                      id="training-cycle", next_run_time=datetime.now(), **once)
    scheduler.add_job(service.poll_request, IntervalTrigger(seconds=REQUEST_POLL_SECONDS),
                      id="train-now-poll", **once)
    return scheduler


async def serve(settings) -> None:
    """Run the schedule until SIGINT/SIGTERM."""
    store = Store.from_settings(settings)
    await store.ping()
    scheduler = build_scheduler(TrainerService(settings, store), settings)
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
        log.info("trainer stopped")
