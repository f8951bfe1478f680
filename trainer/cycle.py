"""One training cycle of one server (tenant): lock, new-rating check, data set, search, gate,
publish -> an outcome. Every read and write goes through that tenant's part of the store, so
a cycle trains on its server's ratings only and moves only its server's adapter.

    acquire the Redis lock (else: skipped) -> keep renewing it in the background
    snapshot where training stands (newest rating event, cursor, new ratings, "train now")
    enough new ratings since the cursor, a "train now" request or `force`? (else: skipped)
        (the request stays in the store until the cycle ends; a failed cycle keeps it)
    the endorsed view of every rated exchange (trainer/trust.py; held items are queued for
        review) -> data set -> search (in a worker thread) -> candidate
    the gate's numbers for base, active and candidate on the same validation side (greedy
        replies scored with chrF, preference accuracy, NLL) -> gate
    the adapter checks every adapter passes before it serves (trainer/transfer.py)
    publish (last step: save, report, compare-and-set of the active pointer) or reject
    record the outcome; move the cursor to the snapshot if the cycle used the ratings; unlock

Nothing in service changes before the last step, so a cycle killed anywhere earlier leaves the
active adapter as it was and its lock simply expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from bot.core.store import (
    BASE_VERSION,
    AdapterRecord,
    Store,
    StoreError,
    TenantStore,
    UnknownAdapter,
)
from bot.core.store.registry import Registry
from trainer.exam import ExamSource
from trainer.importer import IMPORT_MODERATOR
from trainer.lock import TrainingLock
from trainer.outcome import CycleOutcome
from trainer.publish import PublishRefused, publish
from trainer.summary import exam_answers, headline, held_items, taught_since
from trainer.trust import TrustPolicy, judge

if TYPE_CHECKING:
    from trainer.candidate import Candidate

log = logging.getLogger(__name__)

LOCK_HELD = "another trainer holds the lock"
REQUEST_ATTEMPTS = 3  # failed cycles a "train now" request survives


def fit_candidate(*args, **kwargs) -> Candidate:
    """trainer.candidate's, imported only when a cycle trains (torch and peft take seconds)."""
    from trainer.candidate import fit_candidate as fit
    return fit(*args, **kwargs)


async def warm_start(registry: Registry) -> dict | None:
    """Hyperparameters to try first: those of the server's adapter in service, or, while the
    base model serves, of the newest adapter that served before it (never a refused
    candidate's)."""
    for version in [await registry.active(), *await registry.history()]:
        if version == BASE_VERSION:
            continue
        try:
            return (await registry.record(version)).hyperparameters
        except UnknownAdapter:
            continue
    return None


async def _active_adapter(store: TenantStore) -> tuple[str, bytes | None]:
    """The version in service and its bytes (None for the base or unreadable bytes)."""
    parent = await store.registry.active()
    if parent == BASE_VERSION:
        return parent, None
    try:
        return parent, await store.registry.blob(parent)
    except StoreError as error:
        log.warning("active adapter %s is unreadable (%s); gating against the base model",
                    parent, error)
        return parent, None


async def due_tenants(settings, store: Store, *, requested_only: bool = False) -> list[int]:
    """The servers a scheduled cycle should train now: those that asked (`/train now`) and,
    unless `requested_only`, those with at least MIN_NEW_RATINGS new ratings."""
    due = []
    for tenant in await store.tenants():
        trainer = store.tenant(tenant).trainer
        snapshot = await trainer.snapshot()
        if requested_only and snapshot.request and await trainer.lock_held():
            continue  # another trainer's cycle of that server will settle the request
        if snapshot.request or (not requested_only
                                and snapshot.new_ratings >= settings.min_new_ratings):
            due.append(tenant)
    return due


async def run_cycle(settings, store: Store, guild: int, *, force: bool = False,
                    progress: bool = True) -> CycleOutcome:
    """Run one training cycle of server `guild` now; see the module docstring. Records its
    outcome in that server's state."""
    started = time.perf_counter()
    store = store.tenant(guild)
    lock = TrainingLock(store, float(settings.train_lock_ttl_seconds))
    if not await lock.acquire():
        outcome = CycleOutcome("skipped", LOCK_HELD, guild=guild)
        await store.trainer.record_run(outcome.as_record())
        log.info("cycle of server %s skipped: %s", guild, LOCK_HELD)
        return outcome
    snapshot = None
    try:
        snapshot = await store.trainer.snapshot()
        outcome = await _locked_cycle(settings, store, lock, snapshot, force=force,
                                      progress=progress)
        outcome.guild = guild
        outcome.learned["headline"] = headline(outcome.outcome, outcome.version, outcome.parent,
                                               outcome.reason, outcome.gate.get("failed"))
        if outcome.ratings_used:
            await store.trainer.set_cursor(snapshot.newest_event)
        # A "train now" request stays until here, so a trainer killed mid-cycle leaves it
        # for the next one; only the request this cycle saw is removed.
        await store.trainer.settle_request(snapshot.request_raw)
        outcome.seconds = round(time.perf_counter() - started, 3)
        run = outcome.as_record()
        await store.trainer.record_run(run)
        log.info("cycle of server %s %s: %s", guild, outcome.outcome, outcome.reason)
        # A promotion is posted with its activation; a refusal or a new hold is told here.
        if outcome.outcome == "rejected" or (outcome.outcome == "skipped" and (
                outcome.learned.get("held") or {}).get("new")):
            await _announce(store, run)
        return outcome
    except Exception as error:
        # Recorded so admins see it; nothing was published (publishing is the last step).
        await store.trainer.record_run({"outcome": "failed", "at": time.time(),
                                        "reason": f"{type(error).__name__}: {error}"})
        if snapshot is not None and snapshot.request_raw:
            await _keep_request(store, snapshot)
        raise
    finally:
        await lock.release()


async def _announce(store: TenantStore, run: dict) -> None:
    """Tell the bots' mod logs about this cycle; a failure costs the post, not the cycle."""
    try:
        await store.registry.announce_cycle(run)
    except Exception as error:
        log.warning("could not tell the bots about this cycle: %s", error)


async def _keep_request(store: TenantStore, snapshot) -> None:
    """A failed cycle leaves the "train now" request for the next one, a few times at most."""
    try:
        settled = await store.trainer.settle_request(snapshot.request_raw, failed=True,
                                                     max_attempts=REQUEST_ATTEMPTS)
    except Exception as error:  # the cycle's own failure is what the caller must see
        log.warning("could not keep the training request for the next cycle: %s", error)
        return
    by = snapshot.request.get("by")
    if settled == "kept":
        log.info("the training request by %s stays for the next cycle", by)
    elif settled == "dropped":
        log.error("the training request by %s was dropped after %d failed cycles", by,
                  REQUEST_ATTEMPTS)


async def _locked_cycle(settings, store: TenantStore, lock: TrainingLock, snapshot, *,
                        force: bool, progress: bool) -> CycleOutcome:
    if not (force or snapshot.request) and snapshot.new_ratings < settings.min_new_ratings:
        return CycleOutcome("skipped", f"{snapshot.new_ratings} new rating(s) since the last "
                                       f"cycle, fewer than MIN_NEW_RATINGS="
                                       f"{settings.min_new_ratings}",
                            new_ratings=snapshot.new_ratings)
    if snapshot.request:
        log.info("training requested by %s", snapshot.request.get("by"))

    parent, active_blob = await _active_adapter(store)
    first_trial = await warm_start(store.registry)
    verdict, exam = await endorsed_view(settings, store)
    queued = await store.trust.hold(verdict.held)
    since = await _previous_cycle_at(store)
    candidate = await asyncio.to_thread(fit_candidate, settings, verdict.rated, exam, parent,
                                        active_blob, first_trial, progress)
    outcome = CycleOutcome("rejected", "", parent=parent, new_ratings=snapshot.new_ratings,
                           ratings_used=True, notes=[*candidate.notes, verdict.note()],
                           data={**candidate.data.counts,
                                 "trust": {**verdict.counts(), "newly_held": queued}},
                           learned={"taught": taught_since(verdict.rated, since),
                                    "held": held_items(verdict.held, queued)})
    return await _judge_and_publish(settings, store, lock, outcome, candidate)


async def _judge_and_publish(settings, store: TenantStore, lock: TrainingLock,
                             outcome: CycleOutcome, candidate: Candidate) -> CycleOutcome:
    """The gate's decision on a trained candidate and, when it passes, publishing."""
    from trainer.gate import GateRules, gate
    from trainer.transfer import service_refusal

    parent = outcome.parent
    if not candidate.data.train or not candidate.data.validation:
        outcome.outcome = "skipped"
        outcome.reason = (f"no usable data: {len(candidate.data.train)} train and "
                          f"{len(candidate.data.validation)} validation examples from "
                          f"{candidate.data.counts['rated_exchanges']} endorsed rated exchanges")
        return outcome
    search = candidate.search
    outcome.trials, outcome.trial_details = len(search.trials), search.trials
    if search.best is None:
        outcome.reason = "every trial failed or was pruned: " + "; ".join(search.failures)
        return outcome

    _describe_candidate(outcome, candidate, settings)
    decision = gate(candidate.quality, GateRules.from_settings(settings))
    outcome.reason = decision.reason
    outcome.gate["failed"] = decision.failed
    outcome.learned["exam"] = exam_answers(outcome.gate.get("samples"), parent)
    # The report saved with a promoted adapter carries the headline the mod log shows.
    outcome.learned["headline"] = headline("promoted" if decision.promote else "rejected", "",
                                           parent, decision.reason, decision.failed)
    if not decision.promote:
        _keep_files(outcome, settings,
                    f"g{store.tenant}-rejected-{time.strftime('%Y%m%d-%H%M%S')}", candidate.png)
        return outcome
    refused = await asyncio.to_thread(service_refusal, settings, search.best.adapter)
    if refused is not None:  # the checks every adapter passes before it serves
        return _refused_by_checks(outcome, refused)
    if not await lock.still_held():
        outcome.reason = "lost the training lock before publishing; nothing was published"
        outcome.ratings_used = False  # whoever holds the lock now trains on them
        return outcome

    record = AdapterRecord(parent=parent, base_model=settings.model_name,
                           hyperparameters=outcome.hyperparameters, trials=search.trials,
                           metrics=outcome.metrics, data=outcome.data)
    try:
        saved = await publish(store.registry, record, search.best.adapter, outcome.report(),
                              candidate.png, canaries=store.canary, share=settings.canary_share)
    except PublishRefused as refused:
        outcome.reason, outcome.version = str(refused), refused.version
        return outcome
    outcome.outcome, outcome.version = "promoted", saved.version
    if settings.canary_share > 0:
        outcome.notes.append(f"a canary for {settings.canary_share:.0%} of new conversations "
                             "until moderators' live ratings decide")
    _keep_files(outcome, settings, saved.version, candidate.png)
    return outcome


async def _previous_cycle_at(store: TenantStore) -> float | None:
    """When the server's last cycle that trained ended (None: never): taught replies newer
    than that are what this cycle learns."""
    for run in await store.trainer.recent_runs():
        if run.get("outcome") in ("promoted", "rejected") and run.get("at"):
            return float(run["at"])
    return None


async def endorsed_view(settings, store: TenantStore):
    """The endorsed view of every rated exchange (trainer/trust.py): only it trains and gives
    the exam its references. Returns the verdict (its held items not yet queued: that is the
    cycle's act, not a reader's) and what the exam needs besides."""
    rated = await store.exchanges.rated()
    importers = frozenset({store.exchanges.user_hash(IMPORT_MODERATOR)})
    verdict = await asyncio.to_thread(judge, rated, await store.trust.state(),
                                      TrustPolicy.from_settings(settings), set(importers))
    pinned = await store.exchanges.get_many(await store.trust.exam_pins())
    return verdict, ExamSource(tuple(pinned), importers)


def _refused_by_checks(outcome: CycleOutcome, refused: str) -> CycleOutcome:
    outcome.reason = f"refused by the adapter checks: {refused}"
    outcome.gate["failed"] = "sanity"
    return outcome


def _describe_candidate(outcome: CycleOutcome, candidate: Candidate, settings) -> None:
    """Fill in the winning trial's numbers: losses, hyperparameters, metrics."""
    search, best = candidate.search, candidate.search.best
    outcome.val_loss = {k: candidate.val_loss.get(k) for k in ("base", "active", "candidate")}
    outcome.gate = {**candidate.quality.numbers(), "samples": candidate.quality.samples}
    outcome.learning_rate = search.best_params["learning_rate"]
    outcome.batch_size = search.best_params["batch_size"]
    outcome.hyperparameters = {
        **search.best_params, "epochs": len(best.val_losses), "best_epoch": best.best_epoch,
        "max_epochs": settings.max_epochs, "micro_batch_size": settings.micro_batch_size,
        "lora_rank": settings.lora_rank, "lora_alpha": settings.lora_alpha,
        "lora_dropout": settings.lora_dropout, "lora_targets": settings.lora_target_modules}
    outcome.metrics = {
        "val_loss": outcome.val_loss,
        "gate": {k: v for k, v in outcome.gate.items() if k != "samples"},
        "train_loss_curve": best.train_losses,
        "val_loss_curve": best.val_losses, "steps_per_epoch": best.steps_per_epoch,
        "train_seconds": round(best.seconds, 3),
        "tokens_per_second": round(best.tokens_seen / best.seconds, 1) if best.seconds else None}


def _keep_files(outcome: CycleOutcome, settings, name: str, png: bytes | None) -> None:
    """Write the report files, named by KEY_PREFIX so bots sharing a folder keep theirs apart;
    a full or read-only disk costs the files, not the cycle."""
    from trainer.report import write_report_files  # matplotlib

    try:
        json_path, png_path = write_report_files(settings.reports_dir,
                                                 f"{settings.key_prefix}-{name}",
                                                 outcome.report(), png)
    except OSError as error:
        log.warning("could not write the training report to %s: %s", settings.reports_dir,
                    error)
        return
    outcome.report_path = str(json_path)
    outcome.png_path = None if png_path is None else str(png_path)
