"""The adapter a cycle evaluates: the search's best fit, tuned by the preference epochs.

`tuned_best_fit` runs the search on the SFT targets (`trainer.search`), keeps the trial whose
exam replies score best when given a judge (`trainer.finalists`), then
PREFERENCE_EPOCHS epochs of SFT + DPO + KTO (trainer.objectives) from the winner at
PREFERENCE_LR_FACTOR x its learning rate, keeping the adapter as it ends: preference terms
belong in a low-learning-rate tail, since at a high rate the tiny model's generation collapses
while its NLL improves. Without SFT targets on both sides of the split (a 👎-only data set)
there is no search: the preference epochs run from a fresh adapter, at the previous adapter's
learning rate (else the middle of the range, log scale) x PREFERENCE_LR_FACTOR.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

from trainer.dataset import TARGET_KINDS, DataSet, Example
from trainer.finalists import ExamJudge
from trainer.fit import FitFailed, FitParams, FitResult, FitRun, Keep, fit_lora
from trainer.objectives import PreferenceObjective
from trainer.search import SearchConfig, SearchResult, batch_choices, first_trial, search_best_fit

log = logging.getLogger(__name__)

SEARCH_SHARE = 0.8  # of the time limit, when preference epochs follow the search


def cycle_seed() -> int:
    """A seed per cycle (from the clock), so the sampler does not propose the same trials
    every cycle; it goes into the report, so a cycle can be repeated."""
    return time.time_ns() // 1000 % 2**31


def tuned_best_fit(base_model, data: DataSet, config: SearchConfig, *, pad_id: int,
                   previous: dict | None = None, progress: bool = True,
                   seed: int | None = None, judge: ExamJudge | None = None) -> SearchResult:
    """The search's best fit on the SFT targets, tuned by the preference epochs (see the
    module docstring); `best` is the adapter to evaluate, `best_params` its hyperparameters.
    `judge` (`trainer.finalists`) picks each trial's epoch and the finalist, instead of the
    loss."""
    if seed is None:
        seed = cycle_seed() if config.seed is None else config.seed
    started = time.monotonic()
    end = started + config.timeout_seconds
    preference = config.preference.objective()
    extra = [e for e in data.train if e.kind not in TARGET_KINDS and preference.uses(e)]
    tail = config.preference_epochs > 0 and bool(extra)
    has_targets = all(any(e.kind in TARGET_KINDS for e in side)
                      for side in (data.train, data.validation))
    if has_targets:
        share = SEARCH_SHARE if tail else 1.0
        result = search_best_fit(base_model, data.train, data.validation, config,
                                 pad_id=pad_id, previous=previous, progress=progress, seed=seed,
                                 deadline=started + share * config.timeout_seconds,
                                 judge=judge)
    else:
        result = SearchResult(best=None, best_params=None, seed=seed)
    result.notes.insert(0, f"search seed {seed}")
    if judge is not None:
        _choose_finalist(result, judge)
    if result.best_params:
        result.best_params = {**result.best_params, "search_seed": seed}  # not the trial's
    if not tail or (has_targets and result.best is None):
        if not has_targets and not tail:
            result.notes.append("no SFT targets and no preference epochs: nothing to train")
        return result
    tail_run = FitRun(label="preference", deadline=end, progress=progress)
    return _with_preference_epochs(base_model, data, config, result, preference, pad_id=pad_id,
                                   start=_tail_start(result, previous, extra, config),
                                   run=tail_run, judge=judge)


def _choose_finalist(result: SearchResult, judge: ExamJudge) -> None:
    """The finalist `judge` scored best becomes the search's winner (noted)."""
    picked = judge.pick([fit for _, fit in result.finalists])
    if picked is None:
        return
    index, note = picked
    result.best_params, result.best = result.finalists[index]
    result.notes.append(note)


def _tail_start(result: SearchResult, previous: dict | None, extra: list[Example],
                config: SearchConfig) -> tuple[float, int]:
    """The learning rate and batch size the preference epochs scale from: the search winner's;
    without one (👎-only) the previous adapter's, else the middle of the range (log scale) and
    the biggest batch."""
    if result.best is not None:
        return result.best_params["learning_rate"], result.best_params["batch_size"]
    choices = batch_choices(len(extra))
    start = first_trial(previous, choices, config.lr_min, config.lr_max)
    if start:
        return start["learning_rate"], start["batch_size"]
    return math.sqrt(config.lr_min * config.lr_max), choices[-1]


def _with_preference_epochs(base_model, data: DataSet, config: SearchConfig,
                            result: SearchResult, preference: PreferenceObjective, *,
                            pad_id: int, start: tuple[float, int], run: FitRun,
                            judge: ExamJudge | None = None) -> SearchResult:
    """`result` with its best fit tuned by the preference epochs; with the search's winner
    (noted why) when they fail, find no time left, or (by `judge`) leave the exam replies
    degenerate or worse beyond noise."""
    learning_rate, batch_size = start
    tail_params = FitParams(learning_rate=learning_rate * config.preference_lr_factor,
                            batch_size=batch_size, max_epochs=config.preference_epochs,
                            patience=config.preference_epochs, seed=result.seed)
    log.info("preference epochs (%s, beta %.2g): %d, lr %.2e, from %s", preference.name,
             preference.beta, config.preference_epochs, tail_params.learning_rate,
             "the search's winner" if result.best else "a fresh adapter")
    if time.monotonic() >= run.deadline:
        result.notes.append("no time left for the preference epochs: the search's winner stays")
        log.warning(result.notes[-1])
        return result
    try:
        tuned = fit_lora(base_model, data.train, data.validation, tail_params, config.fit,
                         pad_id=pad_id, objective=preference, keep=Keep.LAST_EPOCH, run=run,
                         init_adapter=result.best.adapter if result.best else None)
    except FitFailed as error:  # OutOfTime included: the search's winner stays
        result.notes.append(f"preference epochs failed, the search's winner stays: {error}")
        log.warning(result.notes[-1])
        return result
    worse = None if judge is None or result.best is None else \
        judge.worse(tuned.adapter, result.best.adapter)
    if worse:
        result.notes.append(f"the preference epochs left the exam replies worse ({worse}): "
                            "the search's winner stays")
        log.warning(result.notes[-1])
        return result
    result.best_params = {
        "learning_rate": learning_rate, "batch_size": batch_size, "objective": preference.name,
        "preference_epochs": len(tuned.val_losses),
        "preference_learning_rate": tail_params.learning_rate,
        "dpo_weight": preference.dpo_weight, "kto_weight": preference.kto_weight,
        "kto_desirable_weight": preference.desirable_weight,
        "preference_beta": preference.beta, "search_seed": result.seed}
    result.best = _after(result.best, tuned)
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
