"""The gate's rule on given numbers, and the pieces of trainer.quality that need no model."""

from __future__ import annotations

import math
import random

import pytest

from trainer.degeneracy import ReplyFigures
from trainer.exam import Reference
from trainer.gate import MIN_PREFERENCES, MIN_REPLY_PROMPTS, GateRules, gate
from trainer.quality import (
    Interval,
    Measurement,
    Quality,
    Scores,
    paired_bootstrap,
    reply_difference,
    sentence_chrf,
)


def numbers(*, candidate: Scores, base: Scores, active: Scores | None = None,
            vs_active: Interval | None = None, vs_base: Interval | None = None,
            preference_vs_active: Interval | None = None,
            preference_vs_base: Interval | None = None, prompts: int = 20,
            pairs: int = 0) -> Quality:
    return Quality(base=base, candidate=candidate, active=active, vs_active=vs_active,
                   vs_base=vs_base, preference_vs_active=preference_vs_active,
                   preference_vs_base=preference_vs_base, prompts=prompts, pairs=pairs)


RULES = GateRules(margin=0.01, chrf_margin=0.0, forget_nats=0.5)


def decide(quality: Quality):
    return gate(quality, RULES)


def test_lower_nll_with_replies_worse_beyond_noise_is_refused_by_chrf():
    decision = decide(numbers(candidate=Scores(nll=2.0, chrf=12.0), base=Scores(nll=5.0, chrf=30.0),
                              vs_base=Interval(mean=-18.0, low=-22.0, high=-14.0)))
    assert not decision.promote and decision.failed == "chrf"
    assert decision.reason.startswith("chrF") and "12.00" in decision.reason
    assert "30.00" in decision.reason and "[-22.00, -14.00]" in decision.reason


def test_too_few_references_neither_refuse_nor_promote_on_replies():
    # One prompt: the bootstrap interval has no spread ([d, d]), so a loss there is not
    # "beyond noise"; the decision rests on the other numbers and says why.
    worse_on_one = Interval(mean=-3.72, low=-3.72, high=-3.72)
    promoted = decide(numbers(candidate=Scores(nll=2.0, chrf=8.2), base=Scores(nll=5.0, chrf=11.9),
                              vs_base=worse_on_one, prompts=1))
    assert promoted.promote and "only 1 exam reference(s)" in promoted.reason
    assert "chrF" not in promoted.reason.split(";", 1)[1]  # the win is the NLL, not chrF
    better_on_two = Interval(mean=9.0, low=8.0, high=10.0)
    refused = decide(numbers(candidate=Scores(nll=5.0, chrf=40.0), base=Scores(nll=5.0, chrf=31.0),
                             vs_base=better_on_two, prompts=2))
    assert not refused.promote and refused.failed == "improvement"
    # A few more references are still too few; MIN_REPLY_PROMPTS of them, and the same loss
    # refuses.
    def with_references(count: int):
        return decide(numbers(candidate=Scores(nll=2.0, chrf=8.2), base=Scores(nll=5.0, chrf=11.9),
                              vs_base=Interval(mean=-3.72, low=-5.0, high=-2.0), prompts=count))

    few, enough = with_references(MIN_REPLY_PROMPTS - 1), with_references(MIN_REPLY_PROMPTS)
    assert few.promote and f"only {MIN_REPLY_PROMPTS - 1} exam" in few.reason
    assert not enough.promote and enough.failed == "chrf"


def test_a_better_nll_does_not_promote_replies_that_scored_lower_even_within_noise():
    within_noise = decide(numbers(candidate=Scores(nll=2.0, chrf=29.0),
                                  base=Scores(nll=5.0, chrf=30.0),
                                  vs_base=Interval(mean=-1.0, low=-3.9, high=0.1)))
    assert not within_noise.promote and within_noise.failed == "chrf"
    assert "-1.00 on the exam (29.00 against 30.00)" in within_noise.reason
    # Level replies: where the exam can tell (a fair interval), a lower loss does not promote;
    # where it cannot (every prompt was chosen against the base model), the loss decides.
    level = decide(numbers(candidate=Scores(nll=2.0, chrf=30.0), base=Scores(nll=5.0, chrf=30.0),
                           vs_base=Interval(mean=0.0, low=-2.9, high=2.9)))
    assert not level.promote and level.failed == "improvement"
    assert "where the exam can tell" in level.reason and "[-2.90, +2.90]" in level.reason
    untold = decide(numbers(candidate=Scores(nll=2.0, chrf=30.0), base=Scores(nll=5.0, chrf=30.0),
                            vs_base=Interval(mean=0.0, low=-2.9, high=2.9, fair=False)))
    assert untold.promote and "val loss 2.0000 below 5.0000" in untold.reason
    beyond_noise = decide(numbers(candidate=Scores(nll=2.0, chrf=29.0),
                                  base=Scores(nll=5.0, chrf=30.0),
                                  vs_base=Interval(mean=-1.0, low=-1.9, high=-0.1)))
    assert not beyond_noise.promote and beyond_noise.failed == "chrf"
    assert "[-1.90, -0.10]" in beyond_noise.reason
    # GATE_CHRF_MARGIN tolerates a loss of that many points, in the mean and beyond noise.
    unfair_loss = Interval(mean=-1.0, low=-1.9, high=-0.1, fair=False)
    assert gate(numbers(candidate=Scores(nll=2.0, chrf=29.0), base=Scores(nll=5.0, chrf=30.0),
                        vs_base=unfair_loss), GateRules(margin=0.01, chrf_margin=1.5)).promote
    assert not gate(numbers(candidate=Scores(nll=2.0, chrf=29.0), base=Scores(nll=5.0, chrf=30.0),
                            vs_base=unfair_loss), GateRules(margin=0.01, chrf_margin=0.5)).promote


def test_a_refusal_read_on_part_of_the_exam_says_so_beside_the_whole_exams_scores():
    # Higher on the whole exam, lower on the prompts not taught after the active adapter's
    # replies: the moderator sees both, not "6.18 against 4.73" and a refusal.
    refused = decide(numbers(candidate=Scores(nll=2.0, chrf=6.18),
                             active=Scores(nll=3.0, chrf=4.73), base=Scores(nll=5.0, chrf=3.0),
                             vs_active=Interval(mean=-0.15, low=-1.2, high=0.9, prompts=16),
                             vs_base=Interval(mean=3.0, low=2.0, high=4.0, prompts=30),
                             prompts=30))
    assert not refused.promote and refused.failed == "chrf"
    assert ("lower than the active adapter's: -0.15 on 16 exam prompts not taught after its "
            "replies (on all 30: 6.18 against 4.73)") in refused.reason


def test_better_replies_alone_promote_and_each_number_can_be_the_win():
    replies = decide(numbers(candidate=Scores(nll=3.0, chrf=40.0), base=Scores(nll=3.0, chrf=30.0),
                             vs_base=Interval(mean=10.0, low=6.0, high=14.0)))
    assert replies.promote and "chrF 40.00 > 30.00" in replies.reason
    # Preference accuracy against the base model (a tie on every pair: 0.5), beyond noise,
    # where the replies cannot tell.
    preference = decide(numbers(candidate=Scores(nll=3.2, chrf=30.0, preference_accuracy=0.75),
                                base=Scores(nll=3.0, chrf=30.0),
                                vs_base=Interval(mean=0.0, low=-1.0, high=1.0, fair=False),
                                preference_vs_base=Interval(mean=0.25, low=0.1, high=0.4),
                                pairs=MIN_PREFERENCES))
    assert preference.promote and "preference accuracy 0.750 > 0.500" in preference.reason
    # Against an active adapter its own accuracy counts: level replies do not replace it.
    active = Scores(nll=2.5, chrf=35.0, preference_accuracy=0.8)
    not_better = decide(numbers(candidate=Scores(nll=2.6, chrf=35.0, preference_accuracy=0.7),
                                active=active, base=Scores(nll=3.0, chrf=30.0),
                                vs_active=Interval(mean=0.0, low=-1.0, high=1.0),
                                vs_base=Interval(mean=5.0, low=3.0, high=7.0),
                                preference_vs_active=Interval(mean=-0.1, low=-0.3, high=0.1),
                                pairs=MIN_PREFERENCES))
    assert not not_better.promote and not_better.failed == "improvement"
    for part in ("active adapter", "chrF +0.00", "[-1.00, +1.00]"):
        assert part in not_better.reason
    # Where the replies cannot tell, the refusal lists where every number stands.
    untold = decide(numbers(candidate=Scores(nll=3.2, chrf=35.0, preference_accuracy=0.7),
                            base=Scores(nll=3.0, chrf=35.0),
                            vs_base=Interval(mean=0.0, low=-1.0, high=1.0, fair=False),
                            preference_vs_base=Interval(mean=0.2, low=-0.1, high=0.4),
                            pairs=MIN_PREFERENCES))
    assert not untold.promote and untold.failed == "improvement"
    for part in ("base model", "chrF 35.00 vs 35.00", "0.700 vs 0.500", "3.2000 vs 3.0000"):
        assert part in untold.reason


def test_a_gain_within_noise_promotes_nothing():
    """A higher mean whose interval reaches 0 is no win, for chrF and preference alike."""
    within = decide(numbers(candidate=Scores(nll=3.0, chrf=31.0, preference_accuracy=0.513),
                            active=Scores(nll=3.0, chrf=30.0, preference_accuracy=0.5),
                            base=Scores(nll=3.0, chrf=30.0),
                            vs_active=Interval(mean=1.0, low=-2.0, high=4.0),
                            vs_base=Interval(mean=1.0, low=-2.0, high=4.0),
                            preference_vs_active=Interval(mean=0.013, low=-0.1, high=0.12),
                            preference_vs_base=Interval(mean=0.013, low=-0.1, high=0.12),
                            pairs=40))
    assert not within.promote and within.failed == "improvement", within
    # The same preference win over too few pairs is not read at all.
    few = decide(numbers(candidate=Scores(nll=3.0, chrf=30.0, preference_accuracy=1.0),
                         base=Scores(nll=3.0, chrf=30.0),
                         vs_base=Interval(mean=0.0, low=-1.0, high=1.0, fair=False),
                         preference_vs_base=Interval(mean=0.5, low=0.5, high=0.5),
                         pairs=MIN_PREFERENCES - 1))
    assert not few.promote and "too few preferences" in few.reason


def test_forgetting_general_text_refuses_whatever_else_improved():
    quality = numbers(candidate=Scores(nll=2.0, chrf=40.0, general_nll=6.9),
                      base=Scores(nll=3.0, chrf=30.0, general_nll=6.0),
                      vs_base=Interval(mean=10.0, low=6.0, high=14.0))
    decision = decide(quality)
    assert not decision.promote and decision.failed == "forgetting"
    assert "6.900" in decision.reason and "GATE_FORGET_NATS=0.5" in decision.reason
    within = numbers(candidate=Scores(nll=2.0, chrf=40.0, general_nll=6.4),
                     base=Scores(nll=3.0, chrf=30.0, general_nll=6.0),
                     vs_base=Interval(mean=10.0, low=6.0, high=14.0))
    assert decide(within).promote


def test_degenerate_replies_refuse_whatever_else_improved():
    honest = ReplyFigures(replies=20, top_shared=0.1, distinct_2=0.8, link_replies=0)
    spam = ReplyFigures(replies=20, top_shared=0.9, distinct_2=0.5, link_replies=18)
    quality = numbers(candidate=Scores(nll=2.0, chrf=40.0), base=Scores(nll=3.0, chrf=30.0),
                      vs_base=Interval(mean=10.0, low=6.0, high=14.0))
    quality.replies = {"base": honest, "candidate": spam, "references": honest}
    decision = decide(quality)
    assert not decision.promote and decision.failed == "degeneracy"
    assert decision.reason.startswith("degeneracy: 90% of its replies share one")
    quality.replies["candidate"] = honest
    assert decide(quality).promote


def test_replies_worse_than_the_base_refuse_even_when_the_active_is_beaten():
    decision = decide(numbers(candidate=Scores(nll=2.0, chrf=20.0),
                              active=Scores(nll=3.0, chrf=10.0), base=Scores(nll=3.5, chrf=30.0),
                              vs_active=Interval(mean=10.0, low=8.0, high=12.0),
                              vs_base=Interval(mean=-10.0, low=-12.0, high=-8.0)))
    assert not decision.promote and decision.failed == "chrf" and "base model" in decision.reason


def test_replacing_an_active_adapter_needs_a_win_over_it_and_no_loss_to_the_base():
    """The numbers of a chit-chat round-2 candidate: a fair win over the adapter that serves,
    level with the base model within noise on other prompts. Not worse than the base is
    enough; worse than it still refuses."""
    candidate, active = Scores(nll=2.9, chrf=6.67), Scores(nll=3.0, chrf=5.15)
    beats_active = Interval(mean=1.65, low=0.54, high=2.76, prompts=13)
    level = Interval(mean=1.18, low=-1.03, high=3.36, prompts=10)
    promoted = decide(numbers(candidate=candidate, active=active, base=Scores(nll=3.5, chrf=3.35),
                              vs_active=beats_active, vs_base=level))
    assert promoted.promote
    assert "active adapter: chrF 6.67 > 5.15" in promoted.reason
    assert "base model: not worse (chrF +1.18 on 10 exam prompts" in promoted.reason
    below = Interval(mean=-0.5, low=-2.0, high=1.0, prompts=10)
    refused = decide(numbers(candidate=candidate, active=active, base=Scores(nll=3.5, chrf=7.2),
                             vs_active=beats_active, vs_base=below))
    assert not refused.promote and refused.failed == "chrf" and "base model" in refused.reason
    # With no adapter serving, the base model is the one to beat, beyond noise.
    alone = decide(numbers(candidate=candidate, base=Scores(nll=3.5, chrf=3.35), vs_base=level))
    assert not alone.promote and alone.failed == "improvement"


def test_without_references_the_gate_says_so_and_decides_on_the_rest():
    promoted = decide(numbers(candidate=Scores(nll=2.0), base=Scores(nll=3.0), prompts=0))
    assert promoted.promote and "no exam references yet" in promoted.reason
    refused = decide(numbers(candidate=Scores(nll=3.0, preference_accuracy=0.4),
                             base=Scores(nll=3.0), prompts=0,
                             preference_vs_base=Interval(mean=-0.1, low=-0.2, high=0.0),
                             pairs=MIN_PREFERENCES))
    assert not refused.promote and "no references to judge" in refused.reason
    # A 👎-only data set has no reply targets: NLL is nan everywhere, preference decides.
    labels_only = decide(numbers(candidate=Scores(nll=math.nan, preference_accuracy=0.7),
                                 base=Scores(nll=math.nan), prompts=0,
                                 preference_vs_base=Interval(mean=0.2, low=0.05, high=0.35),
                                 pairs=MIN_PREFERENCES))
    assert labels_only.promote and "preference accuracy 0.700 > 0.500" in labels_only.reason


def test_a_nan_candidate_loss_is_refused_by_nll():
    decision = decide(numbers(candidate=Scores(nll=math.nan, chrf=50.0),
                              base=Scores(nll=3.0, chrf=30.0),
                              vs_base=Interval(mean=20.0, low=15.0, high=25.0)))
    assert not decision.promote and decision.failed == "nll"


def test_paired_bootstrap_is_seeded_and_brackets_the_mean():
    rng = random.Random(1)
    ours = [rng.uniform(20, 60) for _ in range(40)]
    theirs = [x - 5 + rng.uniform(-3, 3) for x in ours]
    first = paired_bootstrap(ours, theirs, 1000)
    assert first == paired_bootstrap(ours, theirs, 1000)  # fixed seed
    assert first.low < first.mean < first.high
    assert first.mean == pytest.approx(sum(o - t for o, t in zip(ours, theirs, strict=True)) / 40)
    assert 3 < first.low and first.high < 7  # the true shift is 5, noise ±3 over 40 pairs
    equal = paired_bootstrap(ours, ours, 500)
    assert (equal.mean, equal.low, equal.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap([], [], 100)


def test_chrf_reads_english_and_chinese():
    refs = [Reference("e1", [], None, "open settings then security"),
            Reference("e2", [], None, "退款一般需要三到五个工作日")]
    same, other = sentence_chrf([r.text for r in refs], refs), sentence_chrf(["A.", "A."], refs)
    assert same == [100.0, 100.0]
    assert all(score < 10 for score in other)
    close = sentence_chrf(["open the settings, then security", "退款需要三到五天"], refs)
    assert all(20 < score < 100 for score in close)


def nll_only(candidate: float, active: float | None, base: float) -> Quality:
    """Gate numbers where the replies of every model score the same (chrF 30, a bootstrap
    interval around 0 within the chrF margin) on prompts chosen against the other model (so
    they cannot tell), so only the NLL can make a difference."""
    same = Interval(mean=0.0, low=-1.0, high=1.0, fair=False)
    return Quality(base=Scores(nll=base, chrf=30.0), candidate=Scores(nll=candidate, chrf=30.0),
                   active=None if active is None else Scores(nll=active, chrf=30.0),
                   vs_active=None if active is None else same, vs_base=same, prompts=10)


def test_gate_needs_the_margin_and_a_win_over_the_base():
    def decide_on_nll(candidate, active, base, margin):
        return gate(nll_only(candidate, active, base),
                    GateRules(margin=margin, chrf_margin=0.0, forget_nats=0.5))

    assert decide_on_nll(candidate=2.0, active=None, base=3.0, margin=0.1).promote
    assert not decide_on_nll(candidate=2.95, active=None, base=3.0, margin=0.1).promote
    # What serves is replaced only by replies the exam can tell are better: never on the loss.
    replacing = decide_on_nll(candidate=2.0, active=2.5, base=3.0, margin=0.1)
    assert not replacing.promote and replacing.failed == "improvement"
    assert "cannot tell the candidate's replies from the active adapter's" in replacing.reason
    assert not decide_on_nll(candidate=math.nan, active=2.5, base=3.0, margin=0.0).promote


def measured(sentence: list[float]) -> Measurement:
    return Measurement(Scores(nll=3.0, chrf=sum(sentence) / len(sentence)),
                       ["reply"] * len(sentence), sentence)


def taught_refs(answered_by: list[str]) -> list[Reference]:
    return [Reference(f"e{i}", [], None, "ref", "taught", version)
            for i, version in enumerate(answered_by)]


def test_a_reply_difference_leaves_out_the_prompts_chosen_against_the_other_model():
    # 12 prompts taught after base's bad replies, 12 after v1's: on its own failures v1
    # scores 0 and the candidate 20; elsewhere both score 30.
    refs = taught_refs(["base"] * 12 + ["v1"] * 12)
    candidate, active = measured([30.0] * 12 + [20.0] * 12), measured([30.0] * 12 + [0.0] * 12)
    fair = reply_difference(candidate, active, refs, "v1", samples=200, min_fair=10)
    assert (fair.mean, fair.prompts, fair.fair) == (0.0, 12, True)
    # Too few prompts left: every prompt is read, and the interval says it is not fair.
    few = reply_difference(candidate, active, refs[6:], "v1", samples=200, min_fair=10)
    assert few.prompts == 18 and not few.fair and few.mean > 0
    everything = reply_difference(candidate, active, taught_refs(["v2"] * 12), "v1",
                                  samples=200, min_fair=10)
    assert everything.prompts == 12 and everything.fair


def test_a_chrf_win_on_prompts_chosen_against_the_other_model_promotes_nothing():
    def decided(fair: bool, high: float):
        interval = Interval(mean=high - 2.0, low=high - 4.0, high=high, prompts=20, fair=fair)
        return decide(numbers(candidate=Scores(nll=5.0, chrf=31.0),
                              base=Scores(nll=5.0, chrf=29.0), vs_base=interval))

    assert decided(fair=True, high=6.0).promote
    unfair_win = decided(fair=False, high=6.0)
    assert not unfair_win.promote and unfair_win.failed == "improvement"
    assert "too few prompts were not chosen against the base model" in unfair_win.reason
    # Such an interval still refuses: even where the other model starts from its worst, the
    # candidate scored lower.
    unfair_loss = decided(fair=False, high=-1.0)
    assert not unfair_loss.promote and unfair_loss.failed == "chrf"
    assert "20 exam prompts" in unfair_loss.reason


def test_a_lower_loss_within_noise_is_no_win():
    quality = nll_only(candidate=2.9, active=None, base=3.0)
    quality.nll_vs_base = Interval(mean=0.1, low=-0.05, high=0.25)  # a few targets carry it
    decision = decide(quality)
    assert not decision.promote and decision.failed == "improvement"
    assert "interval of the fall per target [-0.050, +0.250]" in decision.reason
    quality.nll_vs_base = Interval(mean=0.1, low=0.02, high=0.18)
    assert decide(quality).promote
