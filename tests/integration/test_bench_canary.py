"""The canary benchmark runs end to end through the real decision code, and is repeatable."""

from __future__ import annotations

import re

from bench_run import run_bench

LAST_LINE = re.compile(r"wrong_promotions=(\d\.\d{3}) wrong_rollbacks=(\d\.\d{3}) "
                       r"ratings_to_decide_p50=(\d+) scenarios=(\d+)")


def test_a_short_canary_benchmark():
    done, lines, match = run_bench("canary.py", ["--runs", "10"], LAST_LINE)
    promotions, rollbacks, ratings, scenarios = match.groups()
    assert int(scenarios) == 63 == len([line for line in lines if re.match(r"[+-]0\.", line)])
    assert 0 <= float(promotions) <= 1 and 0 <= float(rollbacks) <= 1
    assert int(ratings) >= 20  # no decision before CANARY_MIN_RATINGS of the canary's
    again = run_bench("canary.py", ["--runs", "10"], LAST_LINE)[1]
    assert again == lines  # seeded: the same arguments give the same figures
