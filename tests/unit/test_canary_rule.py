"""The canary's live judge (bot/core/canary_rule.py) on synthetic rating streams: ratings come
in one at a time (a seeded stream of the true 👍 rates) and the judge is asked after each, as
the trainer's scheduler asks while ratings arrive."""

from __future__ import annotations

import random

from bot.core.canary_rule import CanaryRules, Tally, decide

RULES = CanaryRules(min_ratings=20, margin=0.02, confidence=0.95, max_hours=336)


def stream(p_canary: float, p_active: float, *, seed: int, share: float = 0.5,
           per_hour: int = 10, hours: int = 400, rules: CanaryRules = RULES):
    """The first verdict that is not "wait" (with the canary's ratings then), or the last."""
    rng = random.Random(seed)
    counts = {"canary": [0, 0], "active": [0, 0]}
    verdict = None
    for hour in range(1, hours + 1):
        for _ in range(per_hour):
            who = "canary" if rng.random() < share else "active"
            p = p_canary if who == "canary" else p_active
            counts[who][0 if rng.random() < p else 1] += 1
        verdict = decide(Tally(*counts["canary"]), Tally(*counts["active"]), hour, rules)
        if verdict.action != "wait":
            return verdict, sum(counts["canary"])
    return verdict, sum(counts["canary"])


def test_a_better_canary_is_promoted():
    for seed in range(5):
        verdict, rated = stream(0.75, 0.5, seed=seed)
        assert verdict.action == "promote", verdict.reason
        assert not verdict.timed_out
        assert rated >= RULES.min_ratings


def test_a_worse_canary_is_rolled_back():
    for seed in range(5):
        verdict, _ = stream(0.3, 0.6, seed=seed)
        assert verdict.action == "rollback", verdict.reason
        assert "worse than the active adapter" in verdict.reason
        assert not verdict.timed_out


def test_no_decision_before_the_minimum_of_ratings():
    # 19 all-👎 canary replies against 19 all-👍 active ones: clear, but too few.
    verdict = decide(Tally(0, 19), Tally(19, 0), 1, RULES)
    assert verdict.action == "wait"
    assert "needs 20 rated replies of each version" in verdict.reason
    assert decide(Tally(0, 20), Tally(20, 0), 1, RULES).action == "rollback"


def test_at_the_time_limit_too_few_ratings_keep_the_offline_verdict():
    verdict = decide(Tally(1, 4), Tally(10, 2), RULES.max_hours, RULES)
    assert verdict.action == "promote" and verdict.timed_out
    assert "too few ratings" in verdict.reason and "offline gate's verdict stands" in verdict.reason
    assert decide(Tally(1, 4), Tally(10, 2), RULES.max_hours - 1, RULES).action == "wait"


def test_at_the_time_limit_with_enough_ratings_the_evidence_decides():
    # Ahead by 0.1 on 60 ratings each: undecided before the limit, promoted at it; even
    # shares did not show the canary is not worse with the limit's 0.7: rolled back.
    ahead = (Tally(36, 24), Tally(30, 30))
    assert decide(*ahead, RULES.max_hours - 1, RULES).action == "wait"
    promoted = decide(*ahead, RULES.max_hours, RULES)
    assert promoted.action == "promote" and promoted.timed_out, promoted.reason
    even = decide(Tally(30, 30), Tally(30, 30), RULES.max_hours, RULES)
    assert even.action == "rollback" and even.timed_out, even.reason
    assert "not shown to be not worse" in even.reason


def test_the_verdict_gives_the_numbers():
    verdict = decide(Tally(30, 10), Tally(20, 20), 5, RULES)
    assert "canary 30/40 👍 (75%)" in verdict.reason
    assert "active 20/40 👍 (50%)" in verdict.reason
    assert "P(not worse by 0.02)" in verdict.reason
