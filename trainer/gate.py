"""The gate: a candidate goes into service only if it beats what serves.

The gate reads `trainer.quality`'s numbers, measured on the same validation side for the base
model, the active adapter and the candidate. Against the active adapter (the base model when
none serves) and, when an adapter serves, against the base model too, the candidate must:

1. not reply worse beyond noise: the bootstrap interval (90 %) of its mean sentence chrF minus
   the other's must not lie wholly below -GATE_CHRF_MARGIN (chrF points; default 0). Put the
   other way round: the lower bound of what the candidate loses must not exceed the margin.
   (The stricter non-inferiority rule, the interval's lower end above -margin, would refuse
   equally good candidates on small validation sides: +0.4 chrF on 8 prompts can have a lower
   end of -4.)
2. be better on at least one number: a higher mean chrF, a higher preference accuracy (the base
   model counts as 0.5, a tie on every pair), or a validation NLL lower by GATE_MARGIN (nats per
   reply token).

With no references on the validation side (e.g. only 👎 without a taught reply) there are no
replies to score: the reason says so and the decision rests on preference accuracy and NLL.
The same holds with fewer than MIN_REPLY_PROMPTS references: a bootstrap over a few prompts is
far too sure of itself (one prompt gives the interval [d, d]; over half a dozen, one babble
scoring a little below another looks like a loss beyond noise), so a small validation side
must neither refuse nor promote on it. The collapses the reply check is there for show on
validation sides of 40 and more. A refusal names the number that failed. Validation NLL alone
is blind: it can fall while the replies collapse, hence the replies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.quality import Interval, Quality, Scores

BASE_PREFERENCE = 0.5  # the reference model itself ties on every pair
MIN_REPLY_PROMPTS = 10  # fewer references than this: the replies' scores decide nothing


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    failed: str | None = None  # the number that failed: "chrf", "nll", "improvement"


def gate(quality: Quality, *, margin: float, chrf_margin: float) -> GateDecision:
    """Whether the candidate in `quality` may replace the active adapter (see the module)."""
    candidate = quality.candidate
    if not math.isfinite(candidate.nll) and math.isfinite(quality.base.nll):
        return GateDecision(False, f"val loss: the candidate's is {candidate.nll}, not a number",
                            "nll")
    judged = quality.prompts >= MIN_REPLY_PROMPTS  # else no interval is read (see the module)
    others = [("base model", quality.base, quality.vs_base if judged else None,
               BASE_PREFERENCE)]
    if quality.active is not None:
        others.insert(0, ("active adapter", quality.active,
                          quality.vs_active if judged else None,
                          quality.active.preference_accuracy))
    wins = []
    for name, other, interval, other_preference in others:
        refused = _against(name, candidate, other, interval, other_preference, margin,
                           chrf_margin)
        if isinstance(refused, GateDecision):
            return refused
        wins.append(f"{name}: {refused}")
    note = ""
    if not quality.prompts:
        note = ("no held-out references on the validation side, so no replies were scored; "
                "decided on preference accuracy and NLL. ")
    elif not judged:
        note = (f"only {quality.prompts} held-out reference(s) on the validation side (fewer "
                f"than {MIN_REPLY_PROMPTS}), too few to judge the replies; decided on "
                f"preference accuracy and NLL. ")
    return GateDecision(True, note + "candidate beats the " + "; the ".join(wins))


def _against(name: str, candidate: Scores, other: Scores, interval: Interval | None,
             other_preference: float | None, margin: float,
             chrf_margin: float) -> GateDecision | str:
    """A refusal, or the numbers on which the candidate beats `other`."""
    if interval is not None and not interval.high >= -chrf_margin:
        return GateDecision(False, f"chrF: the candidate's replies score {candidate.chrf:.2f} "
                                   f"against the {name}'s {other.chrf:.2f}, worse beyond noise: "
                                   f"the difference {interval.mean:+.2f} has its bootstrap "
                                   f"interval [{interval.low:+.2f}, {interval.high:+.2f}] below "
                                   f"-GATE_CHRF_MARGIN={-chrf_margin:g}", "chrf")
    better = []
    if interval is not None and interval.mean > 0:
        better.append(f"chrF {candidate.chrf:.2f} > {other.chrf:.2f}")
    if candidate.preference_accuracy is not None and other_preference is not None \
            and candidate.preference_accuracy > other_preference:
        better.append(f"preference accuracy {candidate.preference_accuracy:.3f} > "
                      f"{other_preference:.3f}")
    if math.isfinite(candidate.nll) and candidate.nll <= other.nll - margin:
        better.append(f"val loss {candidate.nll:.4f} below {other.nll:.4f} by "
                      f"{other.nll - candidate.nll:.4f} (margin {margin:g})")
    if better:
        return ", ".join(better)
    chrf = ("no references" if interval is None
            else f"chrF {candidate.chrf:.2f} vs {other.chrf:.2f}")
    preference = ("no pairs" if candidate.preference_accuracy is None or other_preference is None
                  else f"{candidate.preference_accuracy:.3f} vs {other_preference:.3f}")
    return GateDecision(False, f"the candidate is better than the {name} on none of reply score "
                               f"({chrf}), preference accuracy ({preference}) or val loss "
                               f"({candidate.nll:.4f} vs {other.nll:.4f}, margin {margin:g})",
                        "improvement")
