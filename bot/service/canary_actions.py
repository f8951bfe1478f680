"""The admins' acts on a server's canary (`/adapter promote`, `/adapter abort`, a rollback
during a canary), what `/adapter status` says of it, and the line the mod log and the console
give a canary's start and end. The trainer decides by itself (trainer/canary.py); these acts
end a canary by hand, once (bot/core/store/canary.py), with the live numbers at that moment.
"""

from __future__ import annotations

import time

from bot.core.canary_rule import CanaryRules, Verdict, decide
from bot.core.store import AdapterEvent, Store
from bot.core.store.canary import Canary
from bot.service.answer import Answer, store_guard
from bot.service.answer_text import when
from bot.service.follow import AdapterRouter

NO_CANARY = "Nothing changed: this server has no canary running."


def canary_line(event: AdapterEvent) -> str:
    """A canary's start or end in one line (the mod log, the console)."""
    v, rest, detail = event.version, event.previous, event.detail or ""
    if event.reason == "started":
        return f"Canary {v} started against {rest}: {detail}"
    if event.reason == "promoted":
        return f"Canary {v} promoted: it now answers every conversation ({detail})"
    return (f"Canary {v} {event.reason}: {rest} answers every conversation again "
            f"({detail})")


class CanaryActions:
    def __init__(self, settings, store: Store, router: AdapterRouter):
        self.settings, self.store, self.router = settings, store, router

    async def _verdict(self, tenant: int, canary: Canary) -> Verdict:
        own = self.store.tenant(tenant)
        mine, rest = await own.canary.tally(canary, await own.trust.distrusted())
        return decide(mine, rest, canary.hours(time.time()),
                      CanaryRules.from_settings(self.settings))

    async def status_lines(self, tenant: int) -> list[str]:
        """What `/adapter status` says of a running canary (nothing when none runs)."""
        canary = await self.store.tenant(tenant).canary.current()
        if canary is None:
            return []
        verdict = await self._verdict(tenant, canary)
        hours = f"{canary.hours():.1f} h of at most {self.settings.canary_max_hours:g} h"
        return [f"Canary: {canary.version} answers {canary.share:.0%} of new conversations, "
                f"{canary.active} the rest (since {when(canary.started_at)}, {hours})",
                f"Live test ({verdict.action} now): {verdict.reason}"]

    @store_guard
    async def promote(self, tenant: int) -> Answer:
        """Promote the canary now: it answers every conversation."""
        own = self.store.tenant(tenant)
        canary = await own.canary.current()
        if canary is None:
            return Answer(NO_CANARY, ok=False)
        verdict = await self._verdict(tenant, canary)
        if not await own.canary.promote(canary, f"by an admin; {verdict.reason}"):
            return Answer(NO_CANARY, ok=False)
        await self.router.refresh(tenant)
        await self.router.refresh_canary(tenant)
        return Answer(f"Promoted canary {canary.version}: it now answers every conversation "
                      f"({verdict.reason}).")

    @store_guard
    async def abort(self, tenant: int, how: str = "aborted") -> Answer:
        """End the canary now: the active adapter answers every conversation again."""
        own = self.store.tenant(tenant)
        canary = await own.canary.current()
        if canary is None:
            return Answer(NO_CANARY, ok=False)
        verdict = await self._verdict(tenant, canary)
        if not await own.canary.end(canary, how, f"by an admin; {verdict.reason}"):
            return Answer(NO_CANARY, ok=False)
        await self.router.refresh_canary(tenant)
        return Answer(f"Ended canary {canary.version} ({how}): {canary.active} answers every "
                      f"conversation again ({verdict.reason}).")

    async def running(self, tenant: int) -> bool:
        return await self.store.tenant(tenant).canary.current() is not None
