"""Learning rate x batch size, tuned by validation loss with Optuna, then the preference epochs.

An in-memory study per cycle: a TPE sampler seeded per cycle (the seed goes into the report),
a successive-halving pruner fed each epoch's validation loss (a trial that is not among the
best at epoch 1, 2, 4, ... stops there), the previous adapter's hyperparameters enqueued as
the first trial. The time limit holds INSIDE a trial: each trial gets the time left divided
by the trials left (a trial pruned early leaves its time to the next), the fit checks its
deadline before every optimizer step, and a trial cut part-way through an epoch validates the
weights it has and reports its best epoch so far (cut before its first step: pruned). On a
124M model on 2 CPU cores an epoch of the demo's data takes longer than the demo's budget,
so its trials are short ones: comparable, if noisy. Every trial keeps only its best epoch's
adapter bytes, and the search only the best trial's. A winning learning rate within a tenth
(log scale) of an end of the range is logged as a warning and noted in the report.

`train_adapter` runs the search on the SFT targets, then PREFERENCE_EPOCHS epochs of SFT + DPO
+ KTO (trainer.objectives) from the winner at PREFERENCE_LR_FACTOR x its learning rate,
keeping the adapter as it ends (what worked on the tiny model: preference terms in a
low-learning-rate tail; at a high rate generation collapsed while NLL improved). Without SFT
targets on both sides of the split (a 👎-only data set) there is no search: the preference
epochs run from a fresh adapter, at the previous adapter's learning rate (else the middle of
the range, log scale) x PREFERENCE_LR_FACTOR.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace

import optuna

from trainer.dataset import TARGET_KINDS, DataSet, Example
from trainer.fit import FitFailed, FitParams, FitResult, Objective, OutOfTime, fit_lora
from trainer.objectives import objective_from

log = logging.getLogger(__name__)

BATCH_SIZES = (4, 8, 16, 32)
EDGE_SHARE = 0.1  # "at the edge": within this share of the log range from an end
SEARCH_SHARE = 0.8  # of the time limit, when preference epochs follow the search
SLICE_SHARE = 0.9  # of a trial's share of the time left, for its steps


@dataclass
class SearchResult:
    best: FitResult | None
    best_params: dict | None
    trials: list[dict] = field(default_factory=list)  # number, params, value, state, ...
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return [f"trial {t['number']}: {t['reason']}" for t in self.trials if t.get("reason")]


def batch_choices(train_size: int) -> list[int]:
    """The batch sizes worth trying: a batch bigger than the data set is the same as all of it."""
    return [b for b in BATCH_SIZES if b <= max(BATCH_SIZES[0], train_size)]


def first_trial(previous: dict | None, choices: list[int], lr_min: float,
                lr_max: float) -> dict | None:
    """The previous adapter's hyperparameters, fitted into this search's ranges."""
    if not previous or "learning_rate" not in previous or "batch_size" not in previous:
        return None
    try:
        lr = min(max(float(previous["learning_rate"]), lr_min), lr_max)
        wanted = int(previous["batch_size"])
    except (TypeError, ValueError):
        return None
    batch = min(choices, key=lambda b: (abs(b - wanted), b))
    return {"learning_rate": lr, "batch_size": batch}


def edge_note(learning_rate: float, lr_min: float, lr_max: float) -> str | None:
    """A warning when the best learning rate sits near an end of the range (log scale)."""
    where = math.log(learning_rate / lr_min) / math.log(lr_max / lr_min)
    if EDGE_SHARE <= where <= 1 - EDGE_SHARE:
        return None
    end, name = (lr_min, "SEARCH_LR_MIN") if where < EDGE_SHARE else (lr_max, "SEARCH_LR_MAX")
    return (f"the best learning rate {learning_rate:.2e} sits at the edge of the search range "
            f"({name}={end:g}): the best may lie outside it")


def run_search(base_model, train: list[Example], validation: list[Example], settings, *,
               device: str, pad_id: int, previous: dict | None = None,
               progress: bool = True, objective: Objective | None = None,
               seed: int = 0, deadline: float | None = None) -> SearchResult:
    """The trials; `deadline` (time.monotonic()) defaults to SEARCH_TIMEOUT_SECONDS from now."""
    if not settings.search_lr_min < settings.search_lr_max:
        raise ValueError("SEARCH_LR_MIN must be below SEARCH_LR_MAX")
    if deadline is None:
        deadline = time.monotonic() + settings.search_timeout_seconds
    choices = batch_choices(len(train))
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log lines say the same
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    enqueued = first_trial(previous, choices, settings.search_lr_min, settings.search_lr_max)
    if enqueued:
        study.enqueue_trial(enqueued)
        log.info("search: first trial repeats the previous best %s", enqueued)

    best: dict = {"result": None, "params": None}
    records: dict[int, dict] = {}

    def run_trial(trial: optuna.Trial) -> float:
        params = {
            "learning_rate": trial.suggest_float("learning_rate", settings.search_lr_min,
                                                 settings.search_lr_max, log=True),
            "batch_size": trial.suggest_categorical("batch_size", choices),
        }
        record = records.setdefault(trial.number, {"number": trial.number, "params": params,
                                                   "value": None, "state": "RUNNING",
                                                   "val_losses": [], "reason": None})

        def on_epoch(epoch: int, val_loss: float) -> None:
            record["val_losses"].append(val_loss)
            trial.report(val_loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} "
                                         f"(val loss {val_loss:.4f} not among the best)")

        # The time left, shared by the trials left: no trial eats the budget, and a trial
        # pruned early leaves its time to the next ones. A tenth stays for what runs past a
        # trial's deadline (the step under way, the validation, setting up the next trial).
        left = max(1, settings.search_trials - trial.number)
        trial_deadline = time.monotonic() + SLICE_SHARE * (deadline - time.monotonic()) / left
        fit_params = FitParams(learning_rate=params["learning_rate"],
                               batch_size=params["batch_size"], max_epochs=settings.max_epochs,
                               patience=settings.early_stop_patience, seed=seed + trial.number)
        log.info("trial %d: lr %.2e, batch %d", trial.number, params["learning_rate"],
                 params["batch_size"])
        try:
            result = fit_lora(base_model, train, validation, fit_params, settings, device=device,
                              pad_id=pad_id, label=f"trial {trial.number}", on_epoch=on_epoch,
                              progress=progress, objective=objective,
                              deadline=trial_deadline, measure_cut=True)
        except OutOfTime as error:
            record["reason"] = f"cut by the time limit before its first step ({error})"
            log.info("trial %d %s", trial.number, record["reason"])
            raise optuna.TrialPruned(record["reason"]) from None
        except FitFailed as error:
            record["reason"] = f"fit failed: {error}"
            log.warning("trial %d failed: %s", trial.number, error)
            raise
        except optuna.TrialPruned as pruned:
            record["reason"] = str(pruned)
            log.info("trial %d %s", trial.number, pruned)
            raise
        record["val_losses"] = list(result.val_losses)  # with a cut epoch's measure
        record["epochs"] = len(result.val_losses)
        if result.notes:
            record["notes"] = result.notes
        if best["result"] is None or result.best_val_loss < best["result"].best_val_loss:
            best["result"], best["params"] = result, params  # only the best keeps its bytes
        return result.best_val_loss

    study.optimize(run_trial, n_trials=settings.search_trials,
                   timeout=max(0.0, deadline - time.monotonic()), catch=(FitFailed,),
                   gc_after_trial=True)

    trials = []
    for trial in study.trials:
        record = records.get(trial.number, {"number": trial.number, "params": trial.params,
                                            "val_losses": [], "reason": None})
        value = trial.value if trial.value is not None and math.isfinite(trial.value) else None
        record.update(state=trial.state.name, value=value)
        trials.append(record)
    outcome = SearchResult(best=best["result"], best_params=best["params"], trials=trials,
                           seed=seed)
    if best["params"]:
        note = edge_note(best["params"]["learning_rate"], settings.search_lr_min,
                         settings.search_lr_max)
        if note:
            log.warning("search: %s", note)
            outcome.notes.append(note)
    return outcome


def cycle_seed() -> int:
    """A seed per cycle (from the clock), so the sampler does not propose the same trials
    every cycle; it goes into the report, so a cycle can be repeated."""
    return time.time_ns() // 1000 % 2**31


def train_adapter(base_model, data: DataSet, settings, *, device: str, pad_id: int,
                  previous: dict | None = None, progress: bool = True,
                  seed: int | None = None) -> SearchResult:
    """The search on the SFT targets, then the preference epochs (see the module docstring);
    `best` is the adapter to evaluate, `best_params` its hyperparameters."""
    if seed is None:
        seed = cycle_seed() if settings.search_seed is None else settings.search_seed
    started = time.monotonic()
    end = started + settings.search_timeout_seconds
    preference = objective_from(settings)
    extra = [e for e in data.train if e.kind not in TARGET_KINDS and preference.uses(e)]
    tail = settings.preference_epochs > 0 and bool(extra)
    has_targets = all(any(e.kind in TARGET_KINDS for e in side)
                      for side in (data.train, data.validation))
    if has_targets:
        share = SEARCH_SHARE if tail else 1.0
        result = run_search(base_model, data.train, data.validation, settings, device=device,
                            pad_id=pad_id, previous=previous, progress=progress, seed=seed,
                            deadline=started + share * settings.search_timeout_seconds)
    else:
        result = SearchResult(best=None, best_params=None, seed=seed)
    result.notes.insert(0, f"search seed {seed}")
    if result.best_params:
        result.best_params = {**result.best_params, "search_seed": seed}  # not the trial's
    if not tail or (has_targets and result.best is None):
        if not has_targets and not tail:
            result.notes.append("no SFT targets and no preference epochs: nothing to train")
        return result

    if result.best is not None:
        learning_rate = result.best_params["learning_rate"]
        batch_size = result.best_params["batch_size"]
    else:  # 👎-only: the previous adapter's rate, else the middle of the range (log scale)
        start = first_trial(previous, batch_choices(len(extra)), settings.search_lr_min,
                            settings.search_lr_max)
        learning_rate = start["learning_rate"] if start else \
            math.sqrt(settings.search_lr_min * settings.search_lr_max)
        batch_size = start["batch_size"] if start else batch_choices(len(extra))[-1]
    tail_params = FitParams(learning_rate=learning_rate * settings.preference_lr_factor,
                            batch_size=batch_size, max_epochs=settings.preference_epochs,
                            patience=settings.preference_epochs, seed=seed)
    log.info("preference epochs (%s, beta %.2g): %d, lr %.2e, from %s", preference.name,
             preference.beta, settings.preference_epochs, tail_params.learning_rate,
             "the search's winner" if result.best else "a fresh adapter")
    if time.monotonic() >= end:
        result.notes.append("no time left for the preference epochs: the search's winner stays")
        log.warning(result.notes[-1])
        return result
    try:
        tuned = fit_lora(base_model, data.train, data.validation, tail_params, settings,
                         device=device, pad_id=pad_id, label="preference", progress=progress,
                         objective=preference, keep_last=True, deadline=end,
                         init_adapter=result.best.adapter if result.best else None)
    except FitFailed as error:  # OutOfTime included: the search's winner stays
        result.notes.append(f"preference epochs failed, the search's winner stays: {error}")
        log.warning(result.notes[-1])
        return result
    params = {"learning_rate": learning_rate, "batch_size": batch_size}
    params.update(objective=preference.name, preference_epochs=len(tuned.val_losses),
                  preference_learning_rate=tail_params.learning_rate,
                  dpo_weight=preference.dpo_weight, kto_weight=preference.kto_weight,
                  kto_desirable_weight=preference.desirable_weight,
                  preference_beta=preference.beta, search_seed=seed)
    result.best, result.best_params = _after(result.best, tuned), params
    result.notes += tuned.notes
    return result


def _after(searched: FitResult | None, tuned: FitResult) -> FitResult:
    """The tuned adapter with the search winner's curves before its own (the curves of its
    best epochs; the preference epochs' train losses include the DPO and KTO terms)."""
    if searched is None:
        return tuned
    kept = searched.best_epoch
    return replace(tuned, val_losses=searched.val_losses[:kept] + tuned.val_losses,
                   train_losses=searched.train_losses[:kept * searched.steps_per_epoch]
                   + tuned.train_losses,
                   best_epoch=kept + tuned.best_epoch,
                   steps_per_epoch=searched.steps_per_epoch,
                   tokens_seen=searched.tokens_seen + tuned.tokens_seen,
                   seconds=searched.seconds + tuned.seconds)
