"""The live judge of a canary: a sequential Beta-Binomial test on moderators' 👍/👎.

Each version's share of 👍 among its rated replies has a Beta(1 + up, 1 + down) posterior; the
difference canary - active is read through the normal approximation of the two posteriors
(their means and variances; exact enough from the minimum number of ratings on, and needs no
scipy). The test is looked at again and again while ratings arrive, so its thresholds are
stricter than a one-look test would need (bench/canary.py measures the wrong decisions):

- promote once the canary is not worse than the active adapter by more than `margin` with
  probability >= `confidence`;
- roll back once it is worse (difference below 0) with probability >= `confidence`;
- both need `min_ratings` rated replies of each version;
- at `max_hours` an undecided canary is decided: with too few ratings the offline gate's verdict
  (promote) stands, and the verdict says so; with enough, it is promoted only when not worse
  with probability >= AT_LIMIT_PROMOTE, else rolled back (a canary that could not show it is
  not worse in that time goes; the bench weighs this against wrongly rolling back).

Pure: no Redis, no clock; the store tallies, the trainer's scheduler acts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Action = Literal["promote", "rollback", "wait"]
AT_LIMIT_PROMOTE = 0.7  # bench/canary.py: at 0.5, 1 in 4 canaries worse by 0.05 was promoted


@dataclass(frozen=True)
class Tally:
    """One version's rated replies: how many got a net 👍 and how many a net 👎."""

    up: int = 0
    down: int = 0

    @property
    def n(self) -> int:
        return self.up + self.down

    def share(self) -> str:
        return f"{self.up}/{self.n} 👍 ({self.up / self.n:.0%})" if self.n else "no ratings"

    def _posterior(self) -> tuple[float, float]:
        a, b = 1 + self.up, 1 + self.down
        return a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))


@dataclass(frozen=True)
class CanaryRules:
    min_ratings: int = 20
    margin: float = 0.02
    confidence: float = 0.95
    max_hours: float = 336.0

    @classmethod
    def from_settings(cls, settings) -> CanaryRules:
        return cls(min_ratings=settings.canary_min_ratings, margin=settings.canary_margin,
                   confidence=settings.canary_confidence, max_hours=settings.canary_max_hours)


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    p_not_worse: float  # P(canary - active > -margin)
    p_worse: float  # P(canary - active < 0)
    timed_out: bool = False


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def probabilities(canary: Tally, active: Tally, margin: float) -> tuple[float, float]:
    """(P(canary - active > -margin), P(canary - active < 0)) under the posteriors."""
    (mc, vc), (ma, va) = canary._posterior(), active._posterior()
    sd = math.sqrt(vc + va)
    diff = mc - ma
    return _normal_cdf((diff + margin) / sd), _normal_cdf(-diff / sd)


def decide(canary: Tally, active: Tally, hours: float, rules: CanaryRules) -> Verdict:
    """What to do with a canary now, from each version's tally and the hours it has run."""
    p_ok, p_worse = probabilities(canary, active, rules.margin)
    numbers = (f"canary {canary.share()}, active {active.share()}; P(not worse by "
               f"{rules.margin:g}) = {p_ok:.2f}, P(worse) = {p_worse:.2f}")
    enough = min(canary.n, active.n) >= rules.min_ratings
    if enough and p_worse >= rules.confidence:
        return Verdict("rollback", f"worse than the active adapter: {numbers}", p_ok, p_worse)
    if enough and p_ok >= rules.confidence:
        return Verdict("promote", f"not worse than the active adapter: {numbers}", p_ok,
                       p_worse)
    if hours < rules.max_hours:
        need = (f"; needs {rules.min_ratings} rated replies of each version" if not enough
                else "")
        return Verdict("wait", f"undecided: {numbers}{need}", p_ok, p_worse)
    limit = f"after {rules.max_hours:g} h"
    if not enough:
        return Verdict("promote", f"{limit} with too few ratings ({canary.n} canary, "
                       f"{active.n} active; {rules.min_ratings} each needed): the offline "
                       "gate's verdict stands", p_ok, p_worse, timed_out=True)
    if p_ok >= AT_LIMIT_PROMOTE:
        return Verdict("promote", f"{limit}, probably not worse: {numbers}", p_ok, p_worse,
                       timed_out=True)
    return Verdict("rollback", f"{limit}, not shown to be not worse: {numbers}", p_ok, p_worse,
                   timed_out=True)
