"""One server's canary: a promoted adapter that answers a share of the server's new
conversations until moderators' live ratings decide (bot/core/canary_rule.py judges; the
trainer's scheduler acts, trainer/canary.py).

    T:canary    JSON Canary: its version, the active version when it started, its share, when
                it started, the offline gate's reason; absent: no canary

Starting and ending one publish an AdapterEvent of kind "canary" on the adapter channel (its
`reason`: "started", or how it ended: "promoted", "rolled back", "aborted", "replaced"; its
`detail`: the numbers), so every bot starts or stops routing the share and the mod log says so.
Both are Lua scripts: a canary starts only while the version it was judged against is still
active, and ends once, however many trainers or admins end it at the same moment.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from bot.core.canary_rule import Tally
from bot.core.generation import BASE_VERSION
from bot.core.store.keys import Keys
from bot.core.store.records import ActiveChanged, AdapterEvent, Exchange

# KEYS: canary, active pointer, event channel; ARGV: canary JSON, expected active, event JSON.
# Returns the canary it replaced (or false).
_START = """
local active = redis.call('GET', KEYS[2]) or ARGV[4]
if active ~= ARGV[2] then return redis.error_reply('ACTIVE_CHANGED ' .. active) end
local before = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[3])
return before
"""
# KEYS: canary, event channel; ARGV: version, event JSON. 1 when this call ended it.
_END = """
local raw = redis.call('GET', KEYS[1])
if not raw or cjson.decode(raw)['version'] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
"""
# Promotion in one step: the canary still runs and its active version still serves -> the
# canary ends and becomes active (both announced, the activation first, so a bot serves it
# everywhere before it stops routing the canary's share). KEYS: canary, active, history, event
# channel; ARGV: version, expected active, activated event JSON, canary event JSON.
_PROMOTE = """
local raw = redis.call('GET', KEYS[1])
if not raw or cjson.decode(raw)['version'] ~= ARGV[1] then return 0 end
local current = redis.call('GET', KEYS[2]) or 'base'
if current ~= ARGV[2] then return redis.error_reply('ACTIVE_CHANGED ' .. current) end
redis.call('DEL', KEYS[1])
redis.call('LPUSH', KEYS[3], current)
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', KEYS[4], ARGV[3])
redis.call('PUBLISH', KEYS[4], ARGV[4])
return 1
"""


class Canary(BaseModel):
    version: str
    active: str  # the version it is judged against (active when it started)
    share: float  # of the server's new conversations it answers
    started_at: float = Field(default_factory=time.time)
    gate: str = ""  # the offline gate's reason for promoting it

    def hours(self, now: float | None = None) -> float:
        return ((now or time.time()) - self.started_at) / 3600


class Canaries:
    """The canary of one tenant (store.tenant(id).canary)."""

    def __init__(self, client: aioredis.Redis, keys: Keys):
        self._redis, self.keys = client, keys
        self._start = client.register_script(_START)
        self._end = client.register_script(_END)
        self._promote = client.register_script(_PROMOTE)

    @property
    def _key(self) -> str:
        return self.keys.canary

    async def current(self) -> Canary | None:
        raw = await self._redis.get(self._key)
        return None if raw is None else Canary.model_validate_json(raw)

    async def start(self, canary: Canary) -> Canary | None:
        """Make `canary` this tenant's (it replaces a running one, which is returned) if
        `canary.active` is still active; else ActiveChanged and nothing changes."""
        event = self._event(canary, "started", (
            f"it answers {canary.share:.0%} of new conversations until moderators' live "
            f"ratings decide; the offline gate: {canary.gate or 'passed'}"))
        try:
            before = await self._start(
                keys=[self._key, self.keys.active, self.keys.adapter_events],
                args=[canary.model_dump_json(), canary.active, event.model_dump_json(),
                      BASE_VERSION])
        except aioredis.ResponseError as error:
            if "ACTIVE_CHANGED" in str(error):
                raise ActiveChanged(f"the active adapter changed meanwhile ({error}); no "
                                    "canary started") from None
            raise
        return None if before is None else Canary.model_validate_json(before)

    async def end(self, canary: Canary, outcome: str, detail: str) -> bool:
        """End `canary` (if it still runs) as `outcome`, announcing it; True when this call
        ended it. Promoting is the caller's move of the active pointer, made first."""
        event = self._event(canary, outcome, detail)
        return bool(await self._end(keys=[self._key, self.keys.adapter_events],
                                    args=[canary.version, event.model_dump_json()]))

    async def promote(self, canary: Canary, detail: str) -> bool:
        """End `canary` as promoted and make it the active adapter, in one step; False when
        it had ended already (nothing moves), or when another version became active meanwhile
        (then the canary ends as aborted: it was judged against a version that left)."""
        activated = AdapterEvent(kind="activated", tenant=self.keys.tenant,
                                 version=canary.version, previous=canary.active)
        keys = [self._key, self.keys.active, self.keys.history, self.keys.adapter_events]
        try:
            return bool(await self._promote(keys=keys, args=[
                canary.version, canary.active, activated.model_dump_json(),
                self._event(canary, "promoted", detail).model_dump_json()]))
        except aioredis.ResponseError as error:
            if "ACTIVE_CHANGED" not in str(error):
                raise
            why = str(error)
        await self.end(canary, "aborted", f"another adapter became active meanwhile ({why})")
        return False

    def _event(self, canary: Canary, outcome: str, detail: str) -> AdapterEvent:
        return AdapterEvent(kind="canary", tenant=self.keys.tenant, version=canary.version,
                            previous=canary.active, reason=outcome, detail=detail)

    async def tally(self, canary: Canary, distrusted: frozenset[str]
                    ) -> tuple[Tally, Tally]:
        """(the canary's, the rest's) rated replies in this server since it started: each
        reply counts once, 👍 or 👎 by the sum of its trusted moderators' ratings (a tie
        does not count); distrusted moderators' ratings are left out."""
        ids = [i.decode() for i in await self._redis.zrangebyscore(
            self.keys.rated, canary.started_at, "+inf")]
        raws = await self._redis.mget([self.keys.exchange(i) for i in ids]) if ids else []
        exchanges = [Exchange.model_validate_json(raw) for raw in raws if raw is not None]
        exchanges = [e for e in exchanges if e.created_at >= canary.started_at]
        async with self._redis.pipeline(transaction=False) as pipe:
            for exchange in exchanges:
                pipe.hgetall(self.keys.ratings(exchange.id))
            votes = await pipe.execute()
        counts = {True: [0, 0], False: [0, 0]}  # is the canary's -> [up, down]
        for exchange, raw in zip(exchanges, votes, strict=True):
            net = sum(int(v) for m, v in raw.items() if m.decode() not in distrusted)
            if net:
                counts[exchange.adapter_version == canary.version][0 if net > 0 else 1] += 1
        return Tally(*counts[True]), Tally(*counts[False])
