"""Learning rate x batch size, tuned by validation loss with Optuna.

An in-memory study per cycle: a seeded TPE sampler, a median pruner fed each epoch's
validation loss, the previous adapter's hyperparameters enqueued as the first trial, and the
trial and time budget from settings (the timeout is checked between trials). Every trial
keeps only its best epoch's adapter bytes, and the search only the best trial's, so the
winner is the candidate without a refit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import optuna

from trainer.dataset import Example
from trainer.fit import FitFailed, FitParams, FitResult, Objective, fit_lora

log = logging.getLogger(__name__)

BATCH_SIZES = (4, 8, 16, 32)
SEED = 0


@dataclass
class SearchResult:
    best: FitResult | None
    best_params: dict | None
    trials: list[dict] = field(default_factory=list)  # number, params, value, state, ...

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


def run_search(base_model, train: list[Example], validation: list[Example], settings, *,
               device: str, pad_id: int, previous: dict | None = None,
               progress: bool = True, objective: Objective | None = None) -> SearchResult:
    if not settings.search_lr_min < settings.search_lr_max:
        raise ValueError("SEARCH_LR_MIN must be below SEARCH_LR_MAX")
    choices = batch_choices(len(train))
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log lines say the same
    sampler = optuna.samplers.TPESampler(seed=SEED)
    # With a handful of trials the default 5 start-up trials would never prune anything.
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
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
                                         f"(val loss {val_loss:.4f} above the median)")

        fit_params = FitParams(learning_rate=params["learning_rate"],
                               batch_size=params["batch_size"], max_epochs=settings.max_epochs,
                               patience=settings.early_stop_patience, seed=SEED + trial.number)
        log.info("trial %d: lr %.2e, batch %d", trial.number, params["learning_rate"],
                 params["batch_size"])
        try:
            result = fit_lora(base_model, train, validation, fit_params, settings, device=device,
                              pad_id=pad_id, label=f"trial {trial.number}", on_epoch=on_epoch,
                              progress=progress, objective=objective)
        except FitFailed as error:
            record["reason"] = f"fit failed: {error}"
            log.warning("trial %d failed: %s", trial.number, error)
            raise
        except optuna.TrialPruned as pruned:
            record["reason"] = str(pruned)
            log.info("trial %d %s", trial.number, pruned)
            raise
        record["epochs"] = len(result.val_losses)
        if best["result"] is None or result.best_val_loss < best["result"].best_val_loss:
            best["result"], best["params"] = result, params  # only the best keeps its bytes
        return result.best_val_loss

    study.optimize(run_trial, n_trials=settings.search_trials,
                   timeout=settings.search_timeout_seconds, catch=(FitFailed,),
                   gc_after_trial=True)

    trials = []
    for trial in study.trials:
        record = records.get(trial.number, {"number": trial.number, "params": trial.params,
                                            "val_losses": [], "reason": None})
        value = trial.value if trial.value is not None and math.isfinite(trial.value) else None
        record.update(state=trial.state.name, value=value)
        trials.append(record)
    return SearchResult(best=best["result"], best_params=best["params"], trials=trials)
