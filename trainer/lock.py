"""The Redis training lock of one server: one trainer process trains it at a time, and a
process that loses the lock (expired, taken over) does not publish."""

from __future__ import annotations

import asyncio
import logging
import uuid

from bot.core.store import TenantStore

log = logging.getLogger(__name__)


class TrainingLock:
    """The Redis training lock, renewed every third of its TTL while the cycle works."""

    def __init__(self, store: TenantStore, ttl: float):
        self.store, self.ttl, self.token = store, ttl, uuid.uuid4().hex
        self.lost = False
        self._keeper: asyncio.Task | None = None

    async def acquire(self) -> bool:
        if not await self.store.trainer.acquire_lock(self.token, self.ttl):
            return False
        self._keeper = asyncio.create_task(self._keep())
        return True

    async def _keep(self) -> None:
        while not self.lost:
            await asyncio.sleep(self.ttl / 3)
            await self.still_held()

    async def still_held(self) -> bool:
        """Renew now; False once the lock expired or another trainer took it."""
        if self.lost:
            return False
        try:
            if not await self.store.trainer.renew_lock(self.token, self.ttl):
                self.lost = True
                log.error("the training lock expired or was taken over; will not publish")
        except Exception as error:  # a Redis blip: the next renewal may still succeed
            log.warning("could not renew the training lock: %s", error)
            return False
        return not self.lost

    async def release(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
        await self.store.trainer.release_lock(self.token)
