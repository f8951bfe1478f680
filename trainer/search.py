"""Learning rate x batch size, tuned by validation loss with Optuna: the best fit of a cycle.

An in-memory study per cycle: a TPE sampler seeded per cycle (the seed goes into the report),
a successive-halving pruner fed each epoch's validation loss (a trial that is not among the
best at epoch 1, 2, 4, ... stops there), the previous adapter's hyperparameters enqueued as
the first trial. The time limit holds INSIDE a trial: each trial gets the time left divided
by the trials left (a trial pruned early leaves its time to the next), the fit checks its
deadline before every optimizer step, and a trial cut part-way through an epoch validates the
weights it has and reports its best epoch so far (cut before its first step: pruned). On a
124M model on 2 CPU cores an epoch of the demo's data takes longer than the demo's budget,
so its trials are short ones: comparable, if noisy. Every trial keeps only its best epoch's
adapter bytes (the lowest loss, or given a judge the best-judged replies,
`trainer.finalists`; answering the exam after each epoch counts in the trial's time); the
search returns the best completed trial by loss and every trial that kept an adapter, pruned
ones included (`finalists`, a few adapter files' worth of bytes), so a cycle can choose among
them by their replies. A winning learning rate within a tenth (log scale) of
an end of the range is logged as a warning and noted in the report.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna

from trainer.dataset import Example
from trainer.fit import (
    FitConfig,
    FitFailed,
    FitParams,
    FitResult,
    FitRun,
    Keep,
    OutOfTime,
    fit_lora,
)
from trainer.objectives import Objective, PreferenceConfig

log = logging.getLogger(__name__)

BATCH_SIZES = (4, 8, 16, 32)
EDGE_SHARE = 0.1  # "at the edge": within this share of the log range from an end
SLICE_SHARE = 0.9  # of a trial's share of the time left, for its steps


@dataclass(frozen=True)
class SearchConfig:
    """What the search and the preference epochs need of the settings."""

    fit: FitConfig
    trials: int = 6  # SEARCH_TRIALS
    timeout_seconds: float = 900  # SEARCH_TIMEOUT_SECONDS, for the search and the tail
    max_epochs: int = 4
    patience: int = 1  # EARLY_STOP_PATIENCE
    lr_min: float = 1e-5  # SEARCH_LR_MIN
    lr_max: float = 1e-2  # SEARCH_LR_MAX
    seed: int | None = None  # SEARCH_SEED; None: a new seed each cycle
    preference: PreferenceConfig = PreferenceConfig()
    preference_epochs: int = 1
    preference_lr_factor: float = 0.25

    @classmethod
    def from_settings(cls, settings) -> SearchConfig:
        return cls(fit=FitConfig.from_settings(settings), trials=settings.search_trials,
                   timeout_seconds=settings.search_timeout_seconds,
                   max_epochs=settings.max_epochs, patience=settings.early_stop_patience,
                   lr_min=settings.search_lr_min, lr_max=settings.search_lr_max,
                   seed=settings.search_seed,
                   preference=PreferenceConfig.from_settings(settings),
                   preference_epochs=settings.preference_epochs,
                   preference_lr_factor=settings.preference_lr_factor)


@dataclass
class SearchResult:
    best: FitResult | None
    best_params: dict | None
    trials: list[dict] = field(default_factory=list)  # number, params, value, state, ...
    seed: int = 0
    notes: list[str] = field(default_factory=list)
    # Every trial that kept an adapter (pruned ones with their best epoch so far), lowest
    # validation loss (of the kept epoch) first: what a cycle chooses among by the exam's
    # replies.
    finalists: list[tuple[dict, FitResult]] = field(default_factory=list)

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


def search_best_fit(base_model, train: list[Example], validation: list[Example],
                    config: SearchConfig, *, pad_id: int, previous: dict | None = None,
                    progress: bool = True, objective: Objective | None = None, seed: int = 0,
                    deadline: float | None = None,
                    judge: Callable[[bytes], float] | None = None) -> SearchResult:
    """The trials and the best fit among them; `deadline` (time.monotonic()) defaults to
    SEARCH_TIMEOUT_SECONDS from now; `judge` picks each trial's epoch (`FitRun.judge`)."""
    if not config.lr_min < config.lr_max:
        raise ValueError("SEARCH_LR_MIN must be below SEARCH_LR_MAX")
    if deadline is None:
        deadline = time.monotonic() + config.timeout_seconds
    choices = batch_choices(len(train))
    study = _study(config, previous, choices, seed)
    trials = _Trials(base_model, train, validation, config, choices=choices, pad_id=pad_id,
                     objective=objective, seed=seed, deadline=deadline, progress=progress,
                     judge=judge)
    study.optimize(trials.run, n_trials=config.trials,
                   timeout=max(0.0, deadline - time.monotonic()), catch=(FitFailed,),
                   gc_after_trial=True)
    outcome = SearchResult(best=trials.best, best_params=trials.best_params,
                           trials=trials.records_of(study), seed=seed,
                           finalists=sorted(trials.finished,
                                            key=lambda found: found[1].kept_val_loss))
    if trials.best_params:
        note = edge_note(trials.best_params["learning_rate"], config.lr_min, config.lr_max)
        if note:
            log.warning("search: %s", note)
            outcome.notes.append(note)
    return outcome


def _study(config: SearchConfig, previous: dict | None, choices: list[int],
           seed: int) -> optuna.Study:
    """A fresh in-memory study, the previous adapter's hyperparameters enqueued first."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log lines say the same
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    enqueued = first_trial(previous, choices, config.lr_min, config.lr_max)
    if enqueued:
        study.enqueue_trial(enqueued)
        log.info("search: first trial repeats the previous best %s", enqueued)
    return study


class _Trials:
    """Optuna's objective: one fit per trial, in its share of the time left. Keeps a record of
    every trial and the bytes of the best fit only."""

    def __init__(self, base_model, train: list[Example], validation: list[Example],
                 config: SearchConfig, *, choices: list[int], pad_id: int,
                 objective: Objective | None, seed: int, deadline: float, progress: bool,
                 judge: Callable[[bytes], float] | None = None):
        self.base_model, self.train, self.validation = base_model, train, validation
        self.judge = judge
        self.config, self.choices, self.pad_id = config, choices, pad_id
        self.objective, self.seed, self.deadline = objective, seed, deadline
        self.progress = progress
        self.records: dict[int, dict] = {}
        self.best: FitResult | None = None
        self.best_params: dict | None = None
        self.finished: list[tuple[dict, FitResult]] = []

    def run(self, trial: optuna.Trial) -> float:
        params = {
            "learning_rate": trial.suggest_float("learning_rate", self.config.lr_min,
                                                 self.config.lr_max, log=True),
            "batch_size": trial.suggest_categorical("batch_size", self.choices),
        }
        record = self.records.setdefault(trial.number, {
            "number": trial.number, "params": params, "value": None, "state": "RUNNING",
            "val_losses": [], "reason": None})
        result = self._fit(trial, params, record)
        record["val_losses"] = list(result.val_losses)  # with a cut epoch's measure
        record["epochs"] = len(result.val_losses)
        if result.notes:
            record["notes"] = result.notes
        if result.judged:
            record["exam_chrf"] = [round(score, 4) for score in result.judged]
            record["kept_epoch"] = result.best_epoch
        if math.isfinite(result.kept_val_loss):
            self.finished.append((params, result))
        if record.get("reason"):  # pruned: a finalist, never the winner by loss
            log.info("trial %d %s", trial.number, record["reason"])
            raise optuna.TrialPruned(record["reason"])
        if self.best is None or result.kept_val_loss < self.best.kept_val_loss:
            self.best, self.best_params = result, params
        return result.kept_val_loss

    def _fit(self, trial: optuna.Trial, params: dict, record: dict) -> FitResult:
        """The trial's fit; a failure or a pruning is written into `record` and raised."""
        fit_params = FitParams(learning_rate=params["learning_rate"],
                               batch_size=params["batch_size"], max_epochs=self.config.max_epochs,
                               patience=self.config.patience, seed=self.seed + trial.number)
        run = FitRun(label=f"trial {trial.number}", deadline=self._trial_deadline(trial),
                     on_epoch=self._pruning(trial, record), judge=self.judge,
                     progress=self.progress)
        log.info("trial %d: lr %.2e, batch %d", trial.number, params["learning_rate"],
                 params["batch_size"])
        try:
            return fit_lora(self.base_model, self.train, self.validation, fit_params,
                            self.config.fit, pad_id=self.pad_id, objective=self.objective,
                            keep=Keep.BEST_EPOCH, run=run)
        except OutOfTime as error:
            record["reason"] = f"cut by the time limit before its first step ({error})"
            log.info("trial %d %s", trial.number, record["reason"])
            raise optuna.TrialPruned(record["reason"]) from None
        except FitFailed as error:
            record["reason"] = f"fit failed: {error}"
            log.warning("trial %d failed: %s", trial.number, error)
            raise

    def _trial_deadline(self, trial: optuna.Trial) -> float:
        """The time left, shared by the trials left: no trial eats the budget, and a trial
        pruned early leaves its time to the next ones. A tenth stays for what runs past a
        trial's deadline (the step under way, the validation, setting up the next trial)."""
        left = max(1, self.config.trials - trial.number)
        return time.monotonic() + SLICE_SHARE * (self.deadline - time.monotonic()) / left

    @staticmethod
    def _pruning(trial: optuna.Trial, record: dict):
        """What hears each epoch's validation loss: the record, then the pruner. A pruned
        trial ends with the adapter of its best epoch so far (noted in `record`)."""
        def on_epoch(epoch: int, val_loss: float) -> bool:
            record["val_losses"].append(val_loss)
            trial.report(val_loss, epoch)
            if not trial.should_prune():
                return False
            record["reason"] = (f"pruned after epoch {epoch} "
                                f"(val loss {val_loss:.4f} not among the best)")
            return True

        return on_epoch

    def records_of(self, study: optuna.Study) -> list[dict]:
        """Every trial's record with Optuna's final state and value."""
        trials = []
        for trial in study.trials:
            record = self.records.get(trial.number, {"number": trial.number,
                                                     "params": trial.params,
                                                     "val_losses": [], "reason": None})
            value = trial.value if trial.value is not None and math.isfinite(trial.value) \
                else None
            record.update(state=trial.state.name, value=value)
            trials.append(record)
        return trials
