"""The canary's judge on the trainer's schedule: for each server with a canary, under that
server's training lock (so with several trainers one decides, and never during its cycle), tally
the trusted moderators' live 👍/👎 of the canary's and the rest's replies since it started
(bot/core/store/canary.py), ask the sequential test (bot/core/canary_rule.py), and promote the
canary or roll it back; the canary's end event tells the bots and the mod log, with the numbers.
"""

from __future__ import annotations

import logging
import time

from bot.core.canary_rule import CanaryRules, Verdict, decide
from bot.core.store import Store, TenantStore
from trainer.cycle import TrainingLock

log = logging.getLogger(__name__)


async def judge_canaries(settings, store: Store, *, now: float | None = None
                         ) -> dict[int, Verdict]:
    """Judge every server's canary now; the verdicts reached (servers whose lock another
    trainer holds are left for the next look)."""
    verdicts = {}
    for tenant in await store.tenants():
        own = store.tenant(tenant)
        if await own.canary.current() is None:
            continue
        try:
            verdict = await judge(settings, own, now=now)
        except Exception:  # one server's failure must not stop the others' judging
            log.exception("judging the canary of server %s failed", tenant)
            continue
        if verdict is not None:
            verdicts[tenant] = verdict
    return verdicts


async def judge(settings, store: TenantStore, *, now: float | None = None) -> Verdict | None:
    """Judge this server's canary under its lock and act on the verdict; None when there is
    no canary or another trainer holds the lock."""
    lock = TrainingLock(store, float(settings.train_lock_ttl_seconds))
    if not await lock.acquire():
        return None
    try:
        canary = await store.canary.current()  # read again under the lock
        if canary is None:
            return None
        mine, rest = await store.canary.tally(canary, await store.trust.distrusted())
        verdict = decide(mine, rest, canary.hours(now or time.time()),
                         CanaryRules.from_settings(settings))
        if verdict.action == "promote":
            acted = await store.canary.promote(canary, verdict.reason)
        elif verdict.action == "rollback":
            acted = await store.canary.end(canary, "rolled back", verdict.reason)
        else:
            return verdict
        if acted:
            log.info("canary %s of server %s %s: %s", canary.version, store.tenant,
                     "promoted" if verdict.action == "promote" else "rolled back",
                     verdict.reason)
        return verdict
    finally:
        await lock.release()
