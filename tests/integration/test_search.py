"""The search: its time limit inside a trial, pruning over epochs, the per-cycle seed, the
learning-rate edge warning, and the preference epochs after it (tiny GPT-2, real Optuna)."""

from __future__ import annotations

import logging
import time

import pytest

from bot.core.dialogue import Turn
from trainer.dataset import IGNORE_INDEX, DataSet, Example
from trainer.exam import Reference
from trainer.finalists import ExamJudge
from trainer.fit import FitConfig, FitParams, FitRun, Keep, OutOfTime, fit_lora
from trainer.objectives import SupervisedObjective
from trainer.quality import GateConfig
from trainer.search import SearchConfig, edge_note, search_best_fit
from trainer.tune import tuned_best_fit


def search_config(settings, **options) -> SearchConfig:
    """The search's part of `settings` with `options` (setting names) changed."""
    return SearchConfig.from_settings(settings.model_copy(update=options))


def make(tokenizer, n: int, kind: str = "reply", reply: str | None = None) -> Example:
    prompt = tokenizer.encode(f"<user> question {n}\n<bot>")
    target = tokenizer.encode(" " + (reply or f"answer {n % 3}")) + [tokenizer.eos_token_id]
    return Example(exchange_id=f"e{n}", kind=kind, input_ids=prompt + target,
                   labels=[IGNORE_INDEX] * len(prompt) + target)


class Slow(SupervisedObjective):
    """SFT that records when each micro-batch starts and takes a while."""

    def __init__(self, seconds: float = 0.05):
        self.starts: list[float] = []
        self.seconds = seconds

    def micro_loss(self, model, micro, batch, **kwargs):
        self.starts.append(time.monotonic())
        time.sleep(self.seconds)
        return super().micro_loss(model, micro, batch, **kwargs)


def test_the_deadline_stops_a_fit_within_a_step(base, tokenizer, settings):
    train = [make(tokenizer, n) for n in range(12)]
    validation = [make(tokenizer, n) for n in range(12, 15)]
    slow = Slow(seconds=0.1)
    # 600 steps would take 60 s at least; 10 s leave room for a busy machine's first step
    # (copying the model and attaching the adapter).
    deadline = time.monotonic() + 10.0
    params = FitParams(learning_rate=1e-2, batch_size=4, max_epochs=200, patience=200)
    config = FitConfig.from_settings(settings.model_copy(update={"micro_batch_size": 4}))
    result = fit_lora(base, train, validation, params, config, pad_id=0, objective=slow,
                      run=FitRun(deadline=deadline, progress=False))
    # One micro-batch per step: no step began after the deadline, and the fit did not finish.
    assert slow.starts and all(start < deadline for start in slow.starts)
    assert len(result.train_losses) == len(slow.starts) < 200 * 3
    assert result.stopped_early and any("time limit" in note for note in result.notes)
    assert 1 <= result.best_epoch <= len(result.val_losses) and result.adapter


def test_a_fit_with_no_time_left_has_nothing_to_keep(base, tokenizer, settings):
    train = [make(tokenizer, n) for n in range(8)]
    with pytest.raises(OutOfTime):
        fit_lora(base, train, train[:2], FitParams(learning_rate=1e-3, batch_size=4,
                                                   max_epochs=2), FitConfig.from_settings(settings),
                 pad_id=0, run=FitRun(deadline=time.monotonic() - 1, progress=False))


def test_trials_share_the_time_and_a_cut_trial_reports_what_it_has(base, tokenizer, settings):
    train = [make(tokenizer, n) for n in range(16)]
    slow = Slow(seconds=0.05)
    options = {"search_trials": 4, "max_epochs": 50, "early_stop_patience": 50,
               "micro_batch_size": 16}
    deadline = time.monotonic() + 8.0  # one trial alone would take 10 s at least
    result = search_best_fit(base, train, train[:3], search_config(settings, **options),
                             pad_id=0, progress=False, objective=slow, deadline=deadline)
    # Trials share the time (without that trial 0 would take all of it; with a loaded CPU the
    # set-up of each trial may leave the last one no time); each trained a few steps and
    # measured its weights; none began a step after the deadline. Trial 0 (50 steps of 0.05 s
    # at least, in a slice of 1.8 s) is always stopped by its share of the time; whether the
    # cut falls inside an epoch depends on its batch size and the machine's load, hence the
    # deterministic test below for the measure of a cut epoch.
    assert len(result.trials) >= 3 and result.best is not None
    assert all(t["val_losses"] for t in result.trials)
    assert all(start < deadline for start in slow.starts)
    assert any("stopped by the time limit" in note for note in result.trials[0].get("notes", []))


class StallsOnce(SupervisedObjective):
    """SFT whose `at`-th micro-batch lasts until `deadline` has passed."""

    def __init__(self, at: int, deadline: float):
        self.at, self.deadline, self.calls = at, deadline, 0

    def micro_loss(self, model, micro, batch, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            time.sleep(max(0.0, self.deadline - time.monotonic()) + 0.01)
        return super().micro_loss(model, micro, batch, **kwargs)


@pytest.mark.parametrize("keep", [Keep.BEST_EPOCH, Keep.BEST_WHOLE_EPOCH])
def test_an_epoch_cut_part_way_is_measured_for_a_trial(base, tokenizer, settings, keep):
    # Three steps per epoch; the second outlasts the deadline, so the third does not start.
    train = [make(tokenizer, n) for n in range(12)]
    validation = [make(tokenizer, n) for n in range(12, 15)]
    deadline = time.monotonic() + 10.0  # room for a busy machine's first step
    params = FitParams(learning_rate=1e-2, batch_size=4, max_epochs=5, patience=5)
    fit = dict(pad_id=0, run=FitRun(deadline=deadline, progress=False),
               objective=StallsOnce(at=2, deadline=deadline), keep=keep)
    config = FitConfig.from_settings(settings.model_copy(update={"micro_batch_size": 4}))
    if keep is Keep.BEST_WHOLE_EPOCH:  # a plain fit keeps whole epochs only: nothing to keep
        with pytest.raises(OutOfTime):
            fit_lora(base, train, validation, params, config, **fit)
        return
    result = fit_lora(base, train, validation, params, config, **fit)
    assert len(result.train_losses) == 2 and len(result.val_losses) == 1
    assert result.best_epoch == 1 and result.adapter and result.stopped_early
    assert any("epoch 1 was cut after 2 of 3 steps" in note for note in result.notes)


class NoTimeLeft(SupervisedObjective):
    def micro_loss(self, model, micro, batch, **kwargs):
        raise OutOfTime("no time for a first step")


def test_a_trial_with_nothing_to_keep_is_pruned(base, tokenizer, settings):
    train = [make(tokenizer, n) for n in range(8)]
    result = search_best_fit(base, train, train[:3], search_config(settings, search_trials=2),
                             pad_id=0, progress=False, objective=NoTimeLeft())
    assert result.best is None and [t["state"] for t in result.trials] == ["PRUNED"] * 2
    assert "time limit" in result.trials[0]["reason"]


def test_successive_halving_prunes_trials_over_epochs(base, tokenizer, settings):
    train = [make(tokenizer, n) for n in range(16)]
    validation = [make(tokenizer, n) for n in range(16, 20)]
    options = {"search_trials": 6, "max_epochs": 4, "early_stop_patience": 4,
               "search_lr_min": 1e-4, "search_lr_max": 3e-2}
    result = search_best_fit(base, train, validation, search_config(settings, **options),
                             pad_id=0, progress=False, seed=3)
    states = [t["state"] for t in result.trials]
    assert len(states) == 6 and "PRUNED" in states and "COMPLETE" in states
    for trial in result.trials:
        # Each epoch's validation loss was reported; a pruned trial stopped before the end.
        if trial["state"] == "PRUNED":
            assert 1 <= len(trial["val_losses"]) < 4
        else:
            assert len(trial["val_losses"]) == 4
    # Every trial kept its best epoch's adapter: each is a finalist, lowest loss first; only a
    # completed one can be the winner by loss.
    losses = [fit.kept_val_loss for _, fit in result.finalists]
    assert len(result.finalists) == 6 and losses == sorted(losses)
    assert all(fit.adapter for _, fit in result.finalists)
    complete = [t for t in result.trials if t["state"] == "COMPLETE"]
    assert result.best.kept_val_loss == min(min(t["val_losses"]) for t in complete)


class InOrder(ExamJudge):
    """A judge with set scores: each adapter it meets scores higher than the ones before it
    (every epoch improves, the last trial wins), except that the adapters it meets after the
    first `worse_after` score lowest."""

    def __init__(self, worse_after: int | None = None):
        refs = [Reference(f"r{n}", [Turn("user", f"question {n}")], None, f"answer {n}")
                for n in range(12)]
        super().__init__(None, None, refs, GateConfig())
        self.worse_after = worse_after
        self.met: dict[bytes, list[float]] = {}

    def scores(self, blob: bytes) -> list[float]:
        if blob not in self.met:
            late = self.worse_after is not None and len(self.met) >= self.worse_after
            rank = -1.0 if late else float(len(self.met))
            self.met[blob] = [rank + 0.1 * n for n in range(len(self.refs))]
        return self.met[blob]

    def degenerate(self, blob: bytes) -> str | None:
        return None


def test_a_judge_keeps_the_epoch_with_the_best_replies(base, tokenizer, settings):
    train = [make(tokenizer, n) for n in range(8)]
    marks = iter([1.0, 3.0, 2.0, 0.0])  # epoch 2 replies best

    result = fit_lora(base, train, train[:2], FitParams(learning_rate=1e-3, batch_size=4,
                                                        max_epochs=4, patience=4),
                      FitConfig.from_settings(settings), pad_id=0, keep=Keep.BEST_EPOCH,
                      run=FitRun(judge=lambda blob: next(marks), progress=False))

    assert result.judged == [1.0, 3.0, 2.0, 0.0] and result.kept_score == 3.0
    assert result.best_epoch == 2 and result.kept_val_loss == result.val_losses[1]


def test_the_judged_finalist_is_what_the_preference_epochs_start_from(base, tokenizer,
                                                                      settings):
    train = [make(tokenizer, n) for n in range(8)] + \
        [make(tokenizer, n, "undesirable", "go away") for n in range(20, 28)]
    data = DataSet(train=train, validation=[make(tokenizer, n) for n in range(8, 10)])
    options = {"search_trials": 3, "max_epochs": 2, "early_stop_patience": 2,
               "preference_epochs": 1}
    judge = InOrder()

    result = tuned_best_fit(base, data, search_config(settings, **options), pad_id=0,
                            progress=False, seed=0, judge=judge)
    last = result.trials[-1]
    assert "exam_chrf" in last and any("kept trial" in note for note in result.notes)
    winner = max(result.finalists, key=lambda found: found[1].kept_score)
    assert result.best_params["learning_rate"] == winner[0]["learning_rate"]
    assert result.best_params["preference_learning_rate"] == pytest.approx(
        settings.preference_lr_factor * winner[0]["learning_rate"])
    assert "objective" in result.best_params  # tuned: its replies were not worse

    # The same search again (same seed), its judge now scoring the tuned adapter lowest: it
    # met every epoch of the search first, then the tuned adapter.
    worse = tuned_best_fit(base, data, search_config(settings, **options), pad_id=0,
                           progress=False, seed=0, judge=InOrder(worse_after=len(judge.met) - 1))
    assert "objective" not in worse.best_params  # the search's winner, not tuned
    assert any("left the exam replies worse" in note for note in worse.notes)


def test_the_seed_changes_the_proposals_and_is_reported(base, tokenizer, settings):
    train = [make(tokenizer, n) for n in range(8)]
    data = DataSet(train=train, validation=[make(tokenizer, n) for n in range(8, 10)])
    quick = search_config(settings, search_trials=2, max_epochs=1)
    first = tuned_best_fit(base, data, quick, pad_id=0, progress=False, seed=1)
    second = tuned_best_fit(base, data, quick, pad_id=0, progress=False, seed=2)
    assert first.best_params["search_seed"] == 1 and "search seed 1" in first.notes
    assert [t["params"] for t in first.trials] != [t["params"] for t in second.trials]
    again = tuned_best_fit(base, data, quick, pad_id=0, progress=False, seed=1)
    assert [t["params"] for t in again.trials] == [t["params"] for t in first.trials]


def test_search_seed_setting_repeats_a_cycle_and_unset_takes_a_new_seed(base, tokenizer,
                                                                         settings):
    train = [make(tokenizer, n) for n in range(8)]
    data = DataSet(train=train, validation=[make(tokenizer, n) for n in range(8, 10)])
    pinned = search_config(settings, search_trials=1, max_epochs=1, search_seed=7)
    assert tuned_best_fit(base, data, pinned, pad_id=0,
                          progress=False).best_params["search_seed"] == 7
    free = search_config(settings, search_trials=1, max_epochs=1, search_seed=None)
    seeds = {tuned_best_fit(base, data, free, pad_id=0,
                            progress=False).best_params["search_seed"] for _ in range(2)}
    assert len(seeds) == 2  # from the clock: each cycle its own


def test_a_best_learning_rate_at_the_edge_is_warned_about(base, tokenizer, settings, caplog):
    assert edge_note(3e-3, 1e-5, 3e-3) and "SEARCH_LR_MAX" in edge_note(3e-3, 1e-5, 3e-3)
    assert "SEARCH_LR_MIN" in edge_note(1.5e-5, 1e-5, 1e-2)
    assert edge_note(3e-4, 1e-5, 1e-2) is None  # the middle (log scale)
    train = [make(tokenizer, n) for n in range(8)]
    one = search_config(settings, search_trials=1, max_epochs=1, search_lr_min=1e-4,
                        search_lr_max=1e-2)
    with caplog.at_level(logging.WARNING, logger="trainer.search"):
        result = search_best_fit(base, train, train[:2], one, pad_id=0, progress=False,
                                 previous={"learning_rate": 1, "batch_size": 4})
    assert result.best_params["learning_rate"] == 1e-2  # the previous rate, clamped to the top
    assert any("edge of the search range" in note for note in result.notes)
    assert any("edge of the search range" in r.getMessage() for r in caplog.records)


def test_preference_epochs_follow_the_search(base, tokenizer, settings):
    train = [make(tokenizer, n) for n in range(8)] + \
        [make(tokenizer, n, "undesirable", "go away") for n in range(20, 28)]
    data = DataSet(train=train, validation=[make(tokenizer, n) for n in range(8, 10)])
    options = {"search_trials": 2, "max_epochs": 2, "preference_epochs": 1,
               "preference_lr_factor": 0.25}
    result = tuned_best_fit(base, data, search_config(settings, **options), pad_id=0,
                            progress=False, seed=0)
    params = result.best_params
    assert params["objective"] == "sft+dpo+kto" and params["preference_epochs"] == 1
    assert params["preference_learning_rate"] == pytest.approx(0.25 * params["learning_rate"])
    searched = [t for t in result.trials if t["state"] == "COMPLETE"]
    assert searched and len(result.best.val_losses) == max(
        t["val_losses"].index(min(t["val_losses"])) + 1 for t in searched
        if t["params"]["learning_rate"] == params["learning_rate"]) + 1

    sft_only = tuned_best_fit(base, data, search_config(
        settings, **options | {"dpo_weight": 0.0, "kto_weight": 0.0}), pad_id=0,
        progress=False, seed=0)
    assert "objective" not in sft_only.best_params  # nothing to add to SFT: no preference epochs


def test_a_thumbs_down_only_data_set_gets_an_adapter(base, tokenizer, settings):
    bad = [make(tokenizer, n, "undesirable", f"go away {n}") for n in range(10)]
    data = DataSet(train=bad[:8], validation=bad[8:])
    result = tuned_best_fit(base, data, search_config(settings, preference_epochs=2),
                            pad_id=0, progress=False, seed=0)
    assert result.trials == [] and result.best is not None and result.best.adapter
    assert len(result.best.val_losses) == 2 and result.best_params["objective"] == "sft+dpo+kto"
    # The middle of the learning-rate range (log scale), times the preference factor.
    middle = (settings.search_lr_min * settings.search_lr_max) ** 0.5
    assert result.best_params["preference_learning_rate"] == \
        pytest.approx(middle * settings.preference_lr_factor)


def test_each_targets_loss_is_its_own_whatever_shares_its_batch(base, tokenizer):
    from trainer.evaluate import evaluate_loss, example_losses

    examples = [make(tokenizer, n, reply="a longer answer " * (n % 3 + 1)) for n in range(5)]
    examples.insert(2, make(tokenizer, 9, "undesirable", "no"))  # not a target: left out
    together = example_losses(base, examples, device="cpu", micro_batch_size=4, pad_id=0)
    alone = [example_losses(base, [e], device="cpu", micro_batch_size=1, pad_id=0)[0]
             for e in examples if e.kind == "reply"]
    assert len(together) == 5 and [count for _, count in together] == \
        [count for _, count in alone]
    assert [total for total, _ in together] == pytest.approx([total for total, _ in alone],
                                                             rel=1e-4)
    assert evaluate_loss(base, examples, device="cpu", micro_batch_size=4, pad_id=0) == \
        pytest.approx(sum(t for t, _ in together) / sum(c for _, c in together))
