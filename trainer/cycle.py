"""One training cycle: lock, new-rating check, data set, search, gate, publish -> an outcome.

    acquire the Redis lock (else: skipped) -> keep renewing it in the background
    snapshot the newest rating event; enough new ratings since the cursor, a "train now"
      request or `force`? (else: skipped, the cursor stays)
    data set from every rated exchange -> search (in a worker thread) -> candidate
    validation loss of base, active and candidate on the same validation set -> gate
    publish (last step: save, report, compare-and-set of the active pointer) or reject
    cursor := the snapshot; record the outcome; release the lock

Nothing in service changes before the last step, so a cycle killed anywhere earlier leaves the
active adapter as it was and its lock simply expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Literal

from bot.adapter_io import AdapterLoadError
from bot.store import BASE_VERSION, AdapterRecord, RatedExchange, Store, StoreError
from trainer.dataset import DataSet, build_dataset
from trainer.fit import evaluate_adapter, load_base_model, load_tokenizer
from trainer.publish import PublishRefused, gate, publish
from trainer.report import loss_curve_png, write_report_files
from trainer.search import SearchResult, run_search

log = logging.getLogger(__name__)

LOCK_HELD = "another trainer holds the lock"


@dataclass
class CycleOutcome:
    outcome: Literal["promoted", "rejected", "skipped"]
    reason: str
    version: str | None = None  # the promoted adapter (or the one saved but refused)
    val_loss: dict = field(default_factory=lambda: {"base": None, "active": None,
                                                    "candidate": None})
    learning_rate: float | None = None
    batch_size: int | None = None
    trials: int | None = None  # how many trials the search ran
    report_path: str | None = None
    png_path: str | None = None
    parent: str | None = None  # the version active when the cycle started
    new_ratings: int | None = None
    data: dict = field(default_factory=dict)
    trial_details: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        """The one-line JSON of `python -m trainer once --json`."""
        return {"outcome": self.outcome, "reason": self.reason, "version": self.version,
                "val_loss": dict(self.val_loss), "learning_rate": self.learning_rate,
                "batch_size": self.batch_size, "trials": self.trials}

    def as_record(self) -> dict:
        return {**asdict(self), "at": time.time()}


@dataclass
class TrainingRun:
    """What the worker thread hands back: the data, the search and the three losses."""

    data: DataSet
    search: SearchResult | None = None
    val_loss: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    png: bytes | None = None


def _train_candidate(settings, rated: list[RatedExchange], parent: str,
                     active_blob: bytes | None, previous: dict | None,
                     progress: bool) -> TrainingRun:
    """The model work of a cycle (blocking; runs in a worker thread)."""
    device = settings.resolved_device()
    tokenizer = load_tokenizer(settings.model_name)
    data = build_dataset(rated, tokenizer, max_tokens=settings.max_train_tokens,
                         max_examples=settings.max_train_examples,
                         val_fraction=settings.val_fraction)
    run = TrainingRun(data=data)
    if not data.train or not data.validation:
        return run
    base = load_base_model(settings.model_name, device)
    pad_id = tokenizer.eos_token_id
    log.info("training: %d train / %d validation examples on %s, up to %d trials",
             len(data.train), len(data.validation), device, settings.search_trials)
    run.search = run_search(base, data.train, data.validation, settings, device=device,
                            pad_id=pad_id, previous=previous, progress=progress)
    if run.search.best is None:
        return run

    def loss_of(blob: bytes | None) -> float:
        return evaluate_adapter(base, blob, data.validation, device=device,
                                micro_batch_size=settings.micro_batch_size, pad_id=pad_id)

    run.val_loss["base"] = loss_of(None)
    run.val_loss["active"] = run.val_loss["base"] if parent == BASE_VERSION else None
    if active_blob is not None:
        try:
            run.val_loss["active"] = loss_of(active_blob)
        except AdapterLoadError as error:
            run.notes.append(f"active adapter {parent} could not be evaluated: {error}")
            log.warning(run.notes[-1])
    # The candidate is measured from its serialized bytes, as the bot will load it.
    run.val_loss["candidate"] = loss_of(run.search.best.adapter)
    best = run.search.best
    run.png = loss_curve_png(
        f"LoRA after {parent}: lr {run.search.best_params['learning_rate']:.2e}, "
        f"batch {run.search.best_params['batch_size']}",
        best.train_losses, best.steps_per_epoch, best.val_losses,
        {"base model": run.val_loss["base"],
         f"active ({parent})": None if parent == BASE_VERSION else run.val_loss["active"]})
    return run


class TrainingLock:
    """The Redis training lock, renewed every third of its TTL while the cycle works."""

    def __init__(self, store: Store, ttl: float):
        self.store, self.ttl, self.token = store, ttl, uuid.uuid4().hex
        self.lost = False
        self._keeper: asyncio.Task | None = None

    async def acquire(self) -> bool:
        if not await self.store.acquire_lock(self.token, self.ttl):
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
            if not await self.store.renew_lock(self.token, self.ttl):
                self.lost = True
                log.error("the training lock expired or was taken over; will not publish")
        except Exception as error:  # a Redis blip: the next renewal may still succeed
            log.warning("could not renew the training lock: %s", error)
            return False
        return not self.lost

    async def release(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
        await self.store.release_lock(self.token)


async def _previous_best(store: Store) -> dict | None:
    """Hyperparameters of the newest adapter in the registry (the last one promoted)."""
    records = sorted(await store.list_adapters(), key=lambda r: r.created_at)
    return records[-1].hyperparameters if records else None


def _report(outcome: CycleOutcome, run: TrainingRun, record: AdapterRecord | None) -> dict:
    return {"outcome": outcome.outcome, "reason": outcome.reason, "parent": outcome.parent,
            "val_loss": outcome.val_loss, "data": run.data.counts,
            "hyperparameters": record.hyperparameters if record else {},
            "metrics": record.metrics if record else {}, "trials": outcome.trial_details,
            "notes": run.notes}


async def run_cycle(settings, store: Store, *, force: bool = False,
                    progress: bool = True) -> CycleOutcome:
    """Run one training cycle now; see the module docstring. Records its outcome in the store."""
    started = time.perf_counter()
    lock = TrainingLock(store, float(settings.train_lock_ttl_seconds))
    if not await lock.acquire():
        outcome = CycleOutcome("skipped", LOCK_HELD)
        await store.record_run(outcome.as_record())
        log.info("cycle skipped: %s", LOCK_HELD)
        return outcome
    try:
        outcome = await _locked_cycle(settings, store, lock, force=force, progress=progress)
        outcome.seconds = round(time.perf_counter() - started, 3)
        await store.record_run(outcome.as_record())
        log.info("cycle %s: %s", outcome.outcome, outcome.reason)
        return outcome
    except Exception as error:
        # Recorded so admins see it; nothing was published (publishing is the last step).
        await store.record_run({"outcome": "failed", "reason": f"{type(error).__name__}: "
                                f"{error}", "at": time.time()})
        raise
    finally:
        await lock.release()


async def _locked_cycle(settings, store: Store, lock: TrainingLock, *, force: bool,
                        progress: bool) -> CycleOutcome:
    snapshot = await store.last_rating_event()
    cursor = await store.get_cursor()
    new_ratings = await store.count_rating_events(cursor, upto=snapshot)
    request = await store.take_training_request()
    if not (force or request) and new_ratings < settings.min_new_ratings:
        return CycleOutcome("skipped", f"{new_ratings} new rating(s) since the last cycle, "
                                       f"fewer than MIN_NEW_RATINGS={settings.min_new_ratings}",
                            new_ratings=new_ratings)
    if request:
        log.info("training requested by %s", request.get("by"))

    parent = await store.active_version()
    active_blob = None
    if parent != BASE_VERSION:
        try:
            active_blob = await store.adapter_bytes(parent)
        except StoreError as error:
            log.warning("active adapter %s is unreadable (%s); gating against the base model",
                        parent, error)
    previous = await _previous_best(store)
    rated = await store.rated_exchanges()
    run = await asyncio.to_thread(_train_candidate, settings, rated, parent, active_blob,
                                  previous, progress)

    outcome = CycleOutcome("rejected", "", parent=parent, new_ratings=new_ratings,
                           data=run.data.counts)
    if not run.data.train or not run.data.validation:
        outcome.outcome = "skipped"
        outcome.reason = (f"no usable data: {len(run.data.train)} train and "
                          f"{len(run.data.validation)} validation examples from "
                          f"{len(rated)} rated exchanges")
        await store.set_cursor(snapshot)
        return outcome

    search = run.search
    outcome.trials = len(search.trials)
    outcome.trial_details = search.trials
    if search.best is None:
        outcome.reason = "every trial failed or was pruned: " + "; ".join(search.failures)
        await store.set_cursor(snapshot)
        return outcome

    best = search.best
    outcome.val_loss = {k: run.val_loss.get(k) for k in ("base", "active", "candidate")}
    outcome.learning_rate = search.best_params["learning_rate"]
    outcome.batch_size = search.best_params["batch_size"]
    record = AdapterRecord(
        parent=parent, base_model=settings.model_name,
        hyperparameters={**search.best_params, "epochs": len(best.val_losses),
                         "best_epoch": best.best_epoch, "max_epochs": settings.max_epochs,
                         "micro_batch_size": settings.micro_batch_size,
                         "lora_rank": settings.lora_rank, "lora_alpha": settings.lora_alpha,
                         "lora_dropout": settings.lora_dropout,
                         "lora_targets": settings.lora_target_modules},
        trials=search.trials,
        metrics={"val_loss": outcome.val_loss, "train_loss_curve": best.train_losses,
                 "val_loss_curve": best.val_losses, "steps_per_epoch": best.steps_per_epoch,
                 "train_seconds": round(best.seconds, 3),
                 "tokens_per_second": round(best.tokens_seen / best.seconds, 1)
                 if best.seconds else None},
        data=run.data.counts)

    decision = gate(candidate=outcome.val_loss["candidate"], active=outcome.val_loss["active"],
                    base=outcome.val_loss["base"], margin=settings.gate_margin)
    outcome.reason = decision.reason
    if decision.promote and not await lock.still_held():
        outcome.reason = "lost the training lock before publishing; nothing was published"
        decision = None
    if decision is None or not decision.promote:
        name = f"rejected-{time.strftime('%Y%m%d-%H%M%S')}"
        _keep_files(outcome, settings.reports_dir, name, _report(outcome, run, record), run.png)
        if decision is not None:  # a lost lock means someone else may be running
            await store.set_cursor(snapshot)
        return outcome

    outcome.outcome = "promoted"
    try:
        saved = await publish(store, record, best.adapter, _report(outcome, run, record),
                              run.png)
    except PublishRefused as refused:
        outcome.outcome, outcome.reason, outcome.version = "rejected", str(refused), \
            refused.version
        await store.set_cursor(snapshot)
        return outcome
    outcome.version = saved.version
    _keep_files(outcome, settings.reports_dir, saved.version,
                {**_report(outcome, run, saved), "version": saved.version}, run.png)
    await store.set_cursor(snapshot)
    return outcome


def _keep_files(outcome: CycleOutcome, directory, name: str, report: dict,
                png: bytes | None) -> None:
    """Write the report files; a full or read-only disk costs the files, not the cycle."""
    try:
        json_path, png_path = write_report_files(directory, name, report, png)
    except OSError as error:
        log.warning("could not write the training report to %s: %s", directory, error)
        return
    outcome.report_path = str(json_path)
    outcome.png_path = None if png_path is None else str(png_path)
