"""Benchmark: how often the live judge of a canary decides wrong, and how fast it decides.

    .venv/bin/python bench/canary.py [--runs 200] [--share 0.2] [--seed 0]

Simulated moderators with known true 👍 rates rate replies through the real decision code
(bot/core/canary_rule.py, the default settings of bot/core/config.py): per scenario a true
difference canary - active (0, ±0.05, ±0.15, ±0.30), a base rate of the active adapter (0.3,
0.5, 0.7) and a rating traffic (20, 100, 500 rated replies a day, Poisson per hour, a `--share`
of them the canary's). The judge looks once an hour (the trainer looks every minute, but the
tallies only change as ratings arrive) until it decides or CANARY_MAX_HOURS ends it. Seeded:
the same arguments give the same figures.

Wrong promotion: a canary truly worse by >= 0.05 promoted, by the live test or because the
time limit came with too few ratings and the offline gate's verdict stood (counted apart too).
Wrong rollback: a canary truly better by >= 0.05 rolled back. Last line:
`wrong_promotions=A wrong_rollbacks=B ratings_to_decide_p50=C scenarios=N` (A, B: shares of
the runs concerned; C: the median of the canary's rated replies at a decision, over the runs
at a true difference of ±0.15).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.core.canary_rule import CanaryRules, Tally, decide  # noqa: E402
from bot.core.config import Settings  # noqa: E402

DIFFS = (-0.30, -0.15, -0.05, 0.0, 0.05, 0.15, 0.30)
BASES = (0.3, 0.5, 0.7)
RATES = (20, 100, 500)


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method (means here stay below 25 an hour)."""
    limit, k, p = pow(2.718281828459045, -mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def simulate(rng: random.Random, p_active: float, p_canary: float, per_day: float,
             share: float, rules: CanaryRules) -> tuple[str, int, int, bool]:
    """One canary: (action, canary ratings, hours, timed out) at its decision."""
    up = {"canary": 0, "active": 0}
    down = {"canary": 0, "active": 0}
    hour = 0
    while True:
        hour += 1
        for _ in range(_poisson(rng, per_day / 24)):
            who = "canary" if rng.random() < share else "active"
            liked = rng.random() < (p_canary if who == "canary" else p_active)
            (up if liked else down)[who] += 1
        verdict = decide(Tally(up["canary"], down["canary"]),
                         Tally(up["active"], down["active"]), hour, rules)
        if verdict.action != "wait":
            return verdict.action, up["canary"] + down["canary"], hour, verdict.timed_out


def scenario(rng, diff, base, per_day, runs, share, rules) -> dict:
    results = [simulate(rng, base, base + diff, per_day, share, rules) for _ in range(runs)]
    decided_live = [r for r in results if not (r[3] and r[0] == "promote" and r[1] <
                                               rules.min_ratings)]
    return {"diff": diff, "base": base, "per_day": per_day,
            "promote": sum(r[0] == "promote" for r in results) / runs,
            "rollback": sum(r[0] == "rollback" for r in results) / runs,
            "offline": (runs - len(decided_live)) / runs,
            "timed_out": sum(r[3] for r in results) / runs,
            "ratings": [r[1] for r in results],
            "hours_p50": statistics.median(r[2] for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    for name in ("min_ratings", "margin", "confidence", "max_hours"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float,
                            help=f"instead of CANARY_{name.upper()}'s default")
    args = parser.parse_args()
    # The settings' defaults (no environment, no .env file), unless an argument says otherwise.
    rules = CanaryRules.from_settings(Settings.model_construct())
    rules = replace(rules, **{name: type(getattr(rules, name))(value)
                              for name, value in vars(args).items()
                              if hasattr(rules, name) and value is not None})
    rng = random.Random(args.seed)
    print(f"rules: {rules}; share {args.share}; {args.runs} runs per scenario")
    print("diff   base  per_day  promote rollback offline timed_out ratings_p50 hours_p50")
    rows = []
    for diff in DIFFS:
        for base in BASES:
            for per_day in RATES:
                row = scenario(rng, diff, base, per_day, args.runs, args.share, rules)
                rows.append(row)
                print(f"{diff:+.2f}  {base:.1f}  {per_day:7d}  {row['promote']:7.3f} "
                      f"{row['rollback']:8.3f} {row['offline']:7.3f} {row['timed_out']:9.3f} "
                      f"{statistics.median(row['ratings']):11.0f} {row['hours_p50']:9.0f}")
    worse = [r for r in rows if r["diff"] <= -0.05]
    better = [r for r in rows if r["diff"] >= 0.05]
    wrong_promotions = statistics.mean(r["promote"] for r in worse)
    wrong_rollbacks = statistics.mean(r["rollback"] for r in better)
    offline_worse = statistics.mean(r["offline"] for r in worse)
    at_15 = [n for r in rows if abs(r["diff"]) == 0.15 for n in r["ratings"]]
    worst_promotion = max(worse, key=lambda r: r["promote"])
    worst_rollback = max(better, key=lambda r: r["rollback"])
    print(f"worse canaries promoted because too few ratings came in time: {offline_worse:.3f}")
    print(f"worst scenario for promotions: {worst_promotion['diff']:+.2f} at base "
          f"{worst_promotion['base']} and {worst_promotion['per_day']}/day: "
          f"{worst_promotion['promote']:.3f}; for rollbacks: {worst_rollback['diff']:+.2f} at "
          f"base {worst_rollback['base']} and {worst_rollback['per_day']}/day: "
          f"{worst_rollback['rollback']:.3f}")
    print(f"wrong_promotions={wrong_promotions:.3f} wrong_rollbacks={wrong_rollbacks:.3f} "
          f"ratings_to_decide_p50={statistics.median(at_15):.0f} scenarios={len(rows)}")


if __name__ == "__main__":
    main()
