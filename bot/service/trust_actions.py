"""The admins' acts on moderator trust, as plain answers for any front end.

The review queue (teachings and 👍 the trainer held instead of training on them), distrusting
and trusting a moderator, and the exam pins (bot replies an admin put on the server's fixed
exam). The store keeps these decisions (bot/core/store/trust.py); the trainer reads them at its
next cycle (trainer/trust.py, trainer/exam.py). Every act names the server it acts in: a held
item, a pin or a distrust of another server is out of reach. Nothing here imports discord.
"""

from __future__ import annotations

from bot.core.store import (
    AdapterEvent,
    Exchange,
    HeldItem,
    OtherTenant,
    Store,
    StoreError,
    UnknownExchange,
    UnknownHeldItem,
)
from bot.core.text import snippet
from bot.service.answer import Answer, store_guard
from bot.service.answer_text import count, fitted, learned_lines

REVIEW_SHOWN = 10  # held items listed in one answer (oldest first); the rest are counted
MIN_PREFIX = 4  # characters of a held item's id an admin may type instead of all of it
NO_REVIEW = "Nothing is waiting for review in this server."
NOT_A_REPLY = "That is not one of my replies that I still remember."
CYCLE_RUNS_READ = 5  # recent runs searched for the one a "cycle" event tells of


async def cycle_lines(store: Store, event: AdapterEvent) -> list[str]:
    """What the training cycle a "cycle" event tells of learned, held or refused, in lines
    (none when its record is gone: the server was wiped, or many cycles ran since)."""
    runs = await store.tenant(event.tenant).trainer.recent_runs(CYCLE_RUNS_READ)
    run = next((r for r in runs if str(r.get("at")) == event.previous), None)
    if run is None:
        return []
    return learned_lines(run.get("learned") or {}) or [
        f"Training cycle {run.get('outcome')}: {snippet(run.get('reason', ''), 200)}"]


def _item_line(item: HeldItem, exchange: Exchange | None) -> str:
    what = "taught" if item.kind == "teach" else "liked"
    asked = f" on “{snippet(exchange.user_message, 50)}”" if exchange is not None else ""
    return (f"`{item.id}` {item.moderator_name or 'a moderator'} {what} "
            f"“{snippet(item.text, 80)}”{asked} - held: {item.reason}")


class TrustActions:
    """Review queue, moderators and exam pins of each server (`actions.trust`)."""

    def __init__(self, store: Store):
        self.store = store

    # --- the review queue -----------------------------------------------------------------

    @store_guard
    async def review_list(self, tenant: int) -> Answer:
        """The held items waiting for an admin, oldest first, with their ids."""
        own = self.store.tenant(tenant)
        pending = await own.trust.pending()
        if not pending:
            return Answer(NO_REVIEW)
        shown = pending[:REVIEW_SHOWN]
        exchanges = {e.id: e for e in await own.exchanges.get_many(
            [item.exchange_id for item in shown])}
        lines = [f"Held for review ({len(pending)}), not trained on until approved:",
                 *(_item_line(item, exchanges.get(item.exchange_id)) for item in shown)]
        if len(pending) > len(shown):
            lines.append(f"... and {len(pending) - len(shown)} more; decide these first.")
        lines.append("Approve ID: it trains from the next cycle. Reject ID: never trained.")
        return Answer(fitted(lines))

    @store_guard
    async def approve(self, tenant: int, item_id: str) -> Answer:
        return await self._decide(tenant, item_id, approve=True)

    @store_guard
    async def reject(self, tenant: int, item_id: str) -> Answer:
        return await self._decide(tenant, item_id, approve=False)

    async def _decide(self, tenant: int, given: str, *, approve: bool) -> Answer:
        trust = self.store.tenant(tenant).trust
        item_id = await self._held_id(tenant, given)
        if item_id is None:
            return Answer(f"Nothing changed: no held item `{given}` in this server; the review "
                          "list shows the pending ones.", ok=False)
        try:
            item = await (trust.approve(item_id) if approve else trust.reject(item_id))
        except UnknownHeldItem:
            return Answer(f"Nothing changed: no held item `{given}` in this server.", ok=False)
        except StoreError as error:  # decided already, or meanwhile
            return Answer(f"Nothing changed: {error}.", ok=False)
        said = f"“{snippet(item.text, 80)}” by {item.moderator_name or 'a moderator'}"
        if approve:
            return Answer(f"Approved {said}: it trains from the next cycle.")
        return Answer(f"Rejected {said}: it never trains.")

    async def _held_id(self, tenant: int, given: str) -> str | None:
        """The id of the held item `given` names: all of an id, or the start of exactly one
        pending item's (at least MIN_PREFIX characters); None when it names none."""
        given = given.strip().strip("`").lower()
        trust = self.store.tenant(tenant).trust
        try:
            return (await trust.item(given)).id
        except UnknownHeldItem:
            pass
        if len(given) < MIN_PREFIX:
            return None
        matches = [item.id for item in await trust.pending() if item.id.startswith(given)]
        return matches[0] if len(matches) == 1 else None

    # --- moderators -----------------------------------------------------------------------

    @store_guard
    async def distrust(self, tenant: int, moderator_id: int | str, name: str) -> Answer:
        if not await self.store.tenant(tenant).trust.distrust(moderator_id):
            return Answer(f"Nothing changed: {name} is distrusted already.", ok=False)
        return Answer(f"Distrusted {name}: their ratings and teachings leave training and the "
                      "exam from the next cycle (they stay stored; trust them again to count "
                      "them).")

    @store_guard
    async def trust(self, tenant: int, moderator_id: int | str, name: str) -> Answer:
        if not await self.store.tenant(tenant).trust.trust(moderator_id):
            return Answer(f"Nothing changed: {name} is not distrusted.", ok=False)
        return Answer(f"Trusted {name} again: their ratings and teachings count from the next "
                      "cycle.")

    # --- the exam -------------------------------------------------------------------------

    @store_guard
    async def exam_add(self, tenant: int, exchange: Exchange | None) -> Answer:
        """Pin this stored bot reply to the server's exam: it becomes the reference every new
        adapter's reply to its prompt is judged against (and it never trains)."""
        if exchange is None:
            return Answer(f"Not added: {NOT_A_REPLY}", ok=False)
        try:
            added = await self.store.tenant(tenant).trust.pin_exam(exchange.id)
        except OtherTenant:
            return Answer("Not added: that reply belongs to another server.", ok=False)
        except UnknownExchange:
            return Answer(f"Not added: {NOT_A_REPLY}", ok=False)
        if not added:
            return Answer("Nothing changed: that reply is on the exam already.", ok=False)
        pins = await self.store.tenant(tenant).trust.exam_pins()
        return Answer(f"Added to this server's exam ({count(len(pins), 'pinned reply')}): "
                      f"from the next cycle every new adapter answers "
                      f"“{snippet(exchange.user_message, 60)}” and is judged against "
                      f"“{snippet(exchange.reply, 60)}”.")

    @store_guard
    async def exam_remove(self, tenant: int, exchange: Exchange | None) -> Answer:
        if exchange is None:
            return Answer(f"Nothing changed: {NOT_A_REPLY}", ok=False)
        if exchange.tenant != tenant or not await self.store.tenant(tenant).trust.unpin_exam(
                exchange.id):
            return Answer("Nothing changed: that reply is not on this server's exam.", ok=False)
        return Answer(f"Removed from this server's exam: “{snippet(exchange.user_message, 60)}”.")
