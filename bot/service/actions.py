"""Every moderator and admin act, as plain answers for any front end.

Discord (cogs) and the console only translate their input into these calls and show the
answer, so rating, teaching, `/style`, `/chat`, `/adapter`, `/train`, `/forget` and `/stats`
behave the same everywhere (the trust acts, `/review`, `/moderators` and `/exam`, are
`actions.trust`: bot/service/trust_actions.py). Who may call what is decided by the front
end before it calls in; every act on data, adapters or training names the tenant (server) it
acts in and touches nothing of another server. Nothing here imports discord.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from bot.core.generation import BASE_VERSION, AdapterLoadError, Generator
from bot.core.metrics import Metrics
from bot.core.store import (
    ActiveChanged,
    Exchange,
    Store,
    StoreError,
    StoreUnavailable,
    UnknownAdapter,
)
from bot.core.text import clean_text, strip_controls
from bot.service.answer import UNAVAILABLE, Answer, store_guard
from bot.service.answer_text import (
    count,
    fitted,
    learned_lines,
    pairs,
    refusal_line,
    stats_text,
    when,
)
from bot.service.canary_actions import CanaryActions
from bot.service.follow import AdapterRouter
from bot.service.retry import with_retries
from bot.service.style_prefix import StyleRejected, validate_style
from bot.service.trust_actions import TrustActions

log = logging.getLogger(__name__)

Scope = Literal["channel", "guild"]
RATING_UNAVAILABLE = ("Rating not stored: the store is unavailable right now - please rate "
                      "again in a moment")
ROLLBACK_ATTEMPTS = 5  # other rollbacks or a promotion may move the pointer meanwhile


def _where(scope: Scope) -> str:
    return "this channel" if scope == "channel" else "this server"


class Actions:
    def __init__(self, settings, store: Store, generator: Generator, router: AdapterRouter,
                 metrics: Metrics | None = None):
        """`router` says which adapter serves each server here (a rollback moves it)."""
        self.metrics = metrics or Metrics()
        self.settings = settings
        self.store = store
        self.generator = generator
        self.router = router
        self.trust = TrustActions(store)  # the review queue, moderators, the exam
        self.canary = CanaryActions(settings, store, router)  # a promoted adapter on trial

    # --- moderators: ratings and corrections --------------------------------------------------

    async def exchange_of_message(self, message_id: int) -> Exchange | None:
        """The exchange whose reply is this message (None: not a reply the bot remembers)."""
        return await self.store.exchanges.for_message(message_id)

    async def rate(self, tenant: int, exchange_id: str, moderator_id: int | str, value: int, *,
                   subject: str = "the reply") -> Answer:
        """+1 or -1 from this moderator of `tenant`; `subject` names the reply in the answer.
        Tried again while the store is unavailable (a rating is idempotent), then answered not
        ok."""
        exchanges = self.store.tenant(tenant).exchanges
        try:
            score = await with_retries(
                lambda: exchanges.rate(exchange_id, moderator_id, value),
                f"rating exchange {exchange_id}")
        except StoreError as error:
            return Answer(f"rating not stored: {error}", ok=False)
        except StoreUnavailable as error:
            log.warning("rating of exchange %s not stored: the store is unavailable (%s)",
                        exchange_id, error)
            return Answer(RATING_UNAVAILABLE, ok=False)
        log.info("moderator rated exchange %s %+d (score %d)", exchange_id, value, score)
        self.metrics.ratings.labels(kind="up" if value > 0 else "down").inc()
        return Answer(f"rated {subject} {'up' if value > 0 else 'down'} (score now {score})")

    @store_guard
    async def withdraw(self, tenant: int, exchange_id: str, moderator_id: int | str,
                       value: int) -> Answer:
        """Withdraw this moderator's rating if it is `value` (removing 👎 after switching to 👍
        keeps the 👍)."""
        ratings = await with_retries(lambda: self.store.exchanges.ratings(exchange_id),
                                     f"reading the ratings of {exchange_id}")
        if ratings.get(self.store.user_hash(moderator_id)) != value:
            return Answer("no such rating of yours to withdraw", ok=False)
        try:
            score = await with_retries(
                lambda: self.store.tenant(tenant).exchanges.withdraw(exchange_id, moderator_id),
                f"withdrawing a rating of {exchange_id}")
        except StoreError as error:
            return Answer(f"withdrawal not stored: {error}", ok=False)
        return Answer(f"rating withdrawn (score now {score})")

    async def rate_reply(self, tenant: int, message_id: int, moderator_id: int | str,
                         value: int) -> Answer | None:
        """Rate the exchange whose reply is this message; None when it is not a reply the bot
        remembers. Never raises for an unavailable store: the answer says the rating was not
        stored, so the front end can tell the moderator."""
        return await self._on_reply(
            message_id, lambda exchange_id: self.rate(tenant, exchange_id, moderator_id, value),
            "rating", RATING_UNAVAILABLE)

    async def withdraw_reply(self, tenant: int, message_id: int, moderator_id: int | str,
                             value: int) -> Answer | None:
        """`withdraw` for the exchange whose reply is this message (None: not one)."""
        return await self._on_reply(
            message_id,
            lambda exchange_id: self.withdraw(tenant, exchange_id, moderator_id, value),
            "withdrawal", f"Withdrawal not stored: {UNAVAILABLE}")

    async def _on_reply(self, message_id: int, act: Callable[[str], Awaitable[Answer]],
                        what: str, unavailable: str) -> Answer | None:
        """`act(exchange id)` for the exchange whose reply is this message; None when it is not
        a reply the bot remembers, the answer `unavailable` when the store cannot say."""
        try:
            exchange = await with_retries(lambda: self.exchange_of_message(message_id),
                                          f"finding the exchange of message {message_id}")
        except StoreUnavailable as error:
            log.warning("%s on message %s not stored: the store is unavailable (%s)", what,
                        message_id, error)
            return Answer(unavailable, ok=False)
        if exchange is None:
            return None
        return await act(exchange.id)

    @store_guard
    async def teach(self, tenant: int, exchange_id: str, moderator_id: int | str,
                    text: str, moderator_name: str | None = None) -> Answer:
        """`moderator_name` is shown where the mod log says what was learned."""
        text = strip_controls(clean_text(text)).strip()
        limit = self.settings.max_message_chars
        if len(text) > limit:
            return Answer(f"Not stored: a better reply is at most {limit} characters (this one "
                          f"has {len(text)}).", ok=False)
        try:
            await with_retries(
                lambda: self.store.tenant(tenant).exchanges.correct(
                    exchange_id, moderator_id, text, moderator_name=moderator_name),
                f"storing a correction of {exchange_id}")
        except StoreError as error:
            return Answer(f"Not stored: {error}.", ok=False)
        self.metrics.ratings.labels(kind="correction").inc()
        return Answer("Thanks - your better reply is stored and will be used in the next "
                      "training.")

    @store_guard
    async def stats(self, tenant: int) -> Answer:
        """This server's numbers from its counters (no exchange is read), per adapter version
        newest first; versions past ANSWER_LIMIT characters are summed up in one line, the one
        in service is always shown."""
        own = self.store.tenant(tenant)
        numbers, active = await own.exchanges.stats(), await own.registry.active()
        return Answer(stats_text(numbers, active))

    # --- admins: style and chat channels ------------------------------------------------------

    @store_guard
    async def set_style(self, scope: Scope, scope_id: int, prefix: str,
                        set_by: int | str, *, where: str | None = None) -> Answer:
        """`where` names the place in the answer (default: this channel / this server)."""
        try:
            prefix = validate_style(prefix, self.settings.style_max_chars)
        except StyleRejected as error:
            return Answer(f"Style not set: {error}.", ok=False)
        await self.store.styles.set(scope, scope_id, prefix, set_by=set_by)
        return Answer(f"Style for {where or _where(scope)} set; the next reply uses it:\n"
                      f"> {prefix}")

    @store_guard
    async def clear_style(self, scope: Scope, scope_id: int, *,
                          where: str | None = None) -> Answer:
        if await self.store.styles.clear(scope, scope_id):
            return Answer(f"Style for {where or _where(scope)} cleared.")
        return Answer(f"There was no style set for {where or _where(scope)}.", ok=False)

    @store_guard
    async def show_style(self, guild_id: int | None, channel_id: int | None,
                         parent_id: int | None = None) -> Answer:
        """The styles that apply here: the thread's own (`parent_id`: in a thread), the
        channel's, the server's, and which is in force."""
        styles = self.store.styles
        found = [(name, await styles.get(scope, scope_id)) for name, scope, scope_id in (
            ("Thread", "channel", channel_id if parent_id is not None else None),
            ("Channel", "channel", parent_id if parent_id is not None else channel_id),
            ("Server", "guild", guild_id)) if scope_id is not None]
        lines, in_force = [], None
        for name, style in found:
            if style is None:
                continue
            if in_force is None:
                in_force = name
                lines.append(f"{name} style (in force): {style.prefix}")
            else:
                lines.append(f"{name} style (overridden here by the {in_force.lower()}'s): "
                             f"{style.prefix}")
        return Answer("\n".join(lines) if lines
                      else "No style is set; replies use the plain model voice.")

    @store_guard
    async def chat(self, channel_id: int, on: bool, *, where: str | None = None,
                   parent_id: int | None = None) -> Answer:
        """Answer every message in a channel (its threads follow it) or not; `parent_id`: the
        channel a thread turned off still follows."""
        where = where or "this channel"
        await self.store.chat.set(channel_id, on)
        if on:
            return Answer(f"I now answer every message in {where}.")
        if parent_id is not None and await self.store.chat.is_on(parent_id):
            return Answer(f"Turned off for {where}, but <#{parent_id}> is on, so I still answer "
                          "every message here; turn it off there to stop.", ok=False)
        return Answer(f"I now answer only mentions and replies in {where}.")

    # --- admins: adapters and training --------------------------------------------------------

    @store_guard
    async def adapter_status(self, tenant: int) -> Answer:
        own = self.store.tenant(tenant)
        version = await own.registry.active()
        lines = [f"Active adapter: {version}"]
        serving = self.router.version_for(tenant)
        if self.router.own_version(tenant) != version:
            problem = await self._unreadable(version)
            refusal = await own.registry.refusal()
            if problem:
                lines.append(f"(it cannot be loaded: {problem}; this process keeps serving "
                             f"{serving})")
            elif refusal is not None and refusal.version == version:
                lines.append(refusal_line(version, refusal.check, serving))
            else:
                lines.append(f"(this process still serves {serving}; it swaps shortly)")
        if version == BASE_VERSION:
            lines.append(f"This server has no adapter of its own; {serving} answers"
                         + (" (the base model)." if serving == BASE_VERSION
                            else " (the default adapter)."))
        else:
            try:
                record = await self.store.registry.record(version)
            except UnknownAdapter:
                lines.append("Its registry record is missing.")
            else:
                lines += [f"Created: {when(record.created_at)} "
                          f"(parent: {record.parent or BASE_VERSION})",
                          f"Metrics: {pairs(record.metrics)}",
                          f"Data: {pairs(record.data)}",
                          f"Hyperparameters: {pairs(record.hyperparameters)}"]
        lines += await self.canary.status_lines(tenant)
        lines += await self._last_cycle(tenant)
        return Answer(fitted(lines))

    async def _unreadable(self, version: str) -> str | None:
        """Why the stored bytes of `version` cannot be loaded (damaged, missing), else None."""
        try:
            if version != BASE_VERSION:
                await self.store.registry.blob(version)
        except StoreError as error:
            return str(error)
        return None

    async def _last_cycle(self, tenant: int) -> list[str]:
        runs = await self.store.tenant(tenant).trainer.recent_runs(1)
        if not runs:
            return ["Last training cycle: none yet."]
        run = runs[0]
        at = f" at {when(run['at'])}" if "at" in run else ""
        learned = learned_lines(run.get("learned") or {})
        if learned:  # its headline says the outcome and why
            return [f"Last training cycle{at}:", *learned]
        return [f"Last training cycle{at}: {run.get('outcome')} ({run.get('reason', '')})"]

    @store_guard
    async def rollback(self, tenant: int) -> Answer:
        """Move this server's registry pointer back one version, once that version loaded
        here: it is loaded first (a damaged or foreign adapter is refused and nothing moves),
        then the pointer moves if nobody moved it meanwhile, and this process serves it at
        once; other processes follow the registry event. During a canary it ends the canary
        instead (the active adapter stays)."""
        if await self.canary.running(tenant):  # the newest change is the canary: it ends
            return await self.canary.abort(tenant, "rolled back")
        registry = self.store.tenant(tenant).registry
        for _ in range(ROLLBACK_ATTEMPTS):
            history = await registry.history()
            if not history:
                return Answer("Nothing rolled back: there is no earlier adapter to roll back "
                              "to.", ok=False)
            target, current = history[0], await registry.active()
            try:
                if target != BASE_VERSION:
                    await self.generator.load(target)
            except (StoreError, AdapterLoadError) as error:
                log.error("rollback to %s refused: it cannot be loaded (%s)", target, error)
                return Answer(f"Nothing rolled back: {target} cannot be loaded ({error}); "
                              f"{current} stays active.", ok=False)
            try:
                event = await registry.rollback(expected=(target, current))
            except ActiveChanged:
                continue  # another act moved the pointer first: look again
            await self.router.refresh(tenant)  # loaded above: this cannot fail to load
            return Answer(f"Rolled back from {event.previous}: now serving {event.version}.",
                          event=event)
        return Answer("Nothing rolled back: the adapters kept changing meanwhile; try again.",
                      ok=False)

    @store_guard
    async def train_now(self, tenant: int, requested_by: str) -> Answer:
        await self.store.tenant(tenant).trainer.request_training(requested_by)
        return Answer("Training requested: the trainer starts a cycle for this server at its "
                      "next check.")

    @store_guard
    async def set_modlog(self, tenant: int, channel_id: int | None) -> Answer:
        """Where this server's adapter changes are posted (None: MODLOG_CHANNEL_ID for the home
        server, nowhere for the others)."""
        await self.store.tenant(tenant).set_modlog_channel(channel_id)
        if channel_id is None:
            return Answer("Adapter changes of this server are no longer posted here.")
        return Answer(f"Adapter changes of this server are posted in <#{channel_id}>.")

    # --- everyone ------------------------------------------------------------------------------

    @store_guard
    async def forget(self, user_id: int | str) -> Answer:
        """Delete everything of this person in every server (bot/core/store/privacy.py)."""
        done = await self.store.forget_user(user_id)
        parts = [f"{count(done.exchanges, 'exchange')} of yours (messages, replies and their "
                 "ratings)",
                 f"{count(done.context_turns, 'message')} of yours quoted in other "
                 "people's conversations with the bot",
                 f"{count(done.ratings, 'rating')} and "
                 f"{count(done.corrections, 'correction')} you gave as a moderator"]
        if done.styles:
            parts.append(f"your name on {count(done.styles, 'style')} you set")
        return Answer(f"Done: deleted {'; '.join(parts)}. Adapters trained before keep what "
                      "they learned; no later training uses any of it.")
