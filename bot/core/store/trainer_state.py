"""What trainer processes share: the rating-event cursor, the lock, "train now", recent runs.

APScheduler's own Redis job store would keep pickles, so whatever several trainer processes
(and the bot) must agree on lives here instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from bot.core.store import scripts
from bot.core.store.keys import Keys

RUNS_KEPT = 50


@dataclass(frozen=True)
class TrainerSnapshot:
    newest_event: str  # the newest rating event now: the cursor moves here after a cycle
    cursor: str  # the newest rating event the last finished cycle used
    new_ratings: int  # rating events after the cursor, up to newest_event
    request: dict | None  # a waiting "train now" request (kept until a cycle settles it)
    request_raw: str = ""  # that request as stored, to settle exactly that one


class TrainerState:
    def __init__(self, client: aioredis.Redis, keys: Keys):
        self._redis, self.keys = client, keys
        self._snapshot = client.register_script(scripts.SNAPSHOT)
        self._renew = client.register_script(scripts.RENEW_LOCK)
        self._release = client.register_script(scripts.RELEASE_LOCK)
        self._settle = client.register_script(scripts.SETTLE_REQUEST)

    async def snapshot(self) -> TrainerSnapshot:
        newest, cursor, count, request = await self._snapshot(
            keys=[self.keys.rating_events, self.keys.trainer("cursor"),
                  self.keys.trainer("request")])
        return TrainerSnapshot(newest_event=newest.decode(), cursor=cursor.decode(),
                               new_ratings=int(count),
                               request=json.loads(request) if request else None,
                               request_raw=request.decode() if request else "")

    async def set_cursor(self, event_id: str) -> None:
        await self._redis.set(self.keys.trainer("cursor"), event_id)

    # --- the lock ------------------------------------------------------------------------------

    async def acquire_lock(self, token: str, ttl_s: float) -> bool:
        return bool(await self._redis.set(self.keys.trainer("lock"), token, nx=True,
                                     px=int(ttl_s * 1000)))

    async def renew_lock(self, token: str, ttl_s: float) -> bool:
        return bool(await self._renew(keys=[self.keys.trainer("lock")],
                                      args=[token, int(ttl_s * 1000)]))

    async def release_lock(self, token: str) -> bool:
        return bool(await self._release(keys=[self.keys.trainer("lock")], args=[token]))

    # --- "train now" ---------------------------------------------------------------------------

    async def request_training(self, requested_by: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.trainer("request"),
                     json.dumps({"by": requested_by, "at": time.time()}))
            pipe.sadd(self.keys.tenants, self.keys.tenant)  # the scheduler looks here
            await pipe.execute()

    async def training_requested(self) -> bool:
        """Whether a "train now" request waits (without taking it)."""
        return bool(await self._redis.exists(self.keys.trainer("request")))

    async def take_request(self) -> dict | None:
        raw = await self._redis.getdel(self.keys.trainer("request"))
        return json.loads(raw) if raw is not None else None

    async def settle_request(self, seen_raw: str, failed: bool = False,
                             max_attempts: int = 3) -> str:
        """After a cycle that saw the request `seen_raw` (as in its snapshot): delete it when
        the cycle ended, or count a failed attempt and keep it for the next cycle, dropping it
        after `max_attempts` failures. A request made meanwhile is left alone. Returns what
        happened: "done", "kept", "dropped" or "newer" (another request replaced it)."""
        if not seen_raw:
            return "done"
        new_raw, outcome = "", "done"
        if failed:
            request = json.loads(seen_raw)
            attempts = int(request.get("failed_attempts", 0)) + 1
            if attempts < max_attempts:
                new_raw, outcome = json.dumps({**request, "failed_attempts": attempts}), "kept"
            else:
                outcome = "dropped"
        settled = await self._settle(keys=[self.keys.trainer("request")],
                                     args=[seen_raw, new_raw])
        return outcome if settled else "newer"

    async def lock_held(self) -> bool:
        """Whether some trainer holds the training lock now."""
        return bool(await self._redis.exists(self.keys.trainer("lock")))

    # --- outcomes of recent cycles -------------------------------------------------------------

    async def record_run(self, outcome: dict) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.keys.trainer("runs"), json.dumps(outcome))
            pipe.ltrim(self.keys.trainer("runs"), 0, RUNS_KEPT - 1)
            await pipe.execute()

    async def recent_runs(self, count: int = 10) -> list[dict]:
        """Outcomes of the latest cycles, newest first."""
        raws = await self._redis.lrange(self.keys.trainer("runs"), 0, count - 1)
        return [json.loads(raw) for raw in raws]
