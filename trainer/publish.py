"""The gate and the publish step: a candidate goes into service only if it beats what serves.

The gate reads `trainer.quality`'s numbers, measured on the same validation side for the base
model, the active adapter and the candidate. Against the active adapter (the base model when
none serves) and, when an adapter serves, against the base model too, the candidate must:

1. not reply worse beyond noise: the bootstrap interval (90 %) of its mean sentence chrF minus
   the other's must not lie wholly below -GATE_CHRF_MARGIN (chrF points; default 0). Put the
   other way round: the lower bound of what the candidate loses must not exceed the margin.
   (A stricter non-inferiority rule, the interval's lower end above -margin, refused equally
   good candidates on small validation sides: +0.4 chrF on 8 prompts had a lower end of -4.)
2. be better on at least one number: a higher mean chrF, a higher preference accuracy (the base
   model counts as 0.5, a tie on every pair), or a validation NLL lower by GATE_MARGIN (nats per
   reply token).

With no references on the validation side (e.g. only 👎 without a taught reply) there are no
replies to score: the reason says so and the decision rests on preference accuracy and NLL.
The same holds with fewer than MIN_REPLY_PROMPTS references: a bootstrap over a few prompts
is far too sure of itself (one prompt gives the interval [d, d]; over the demo's 6 references
it refused, in 1 of 6 runs on a loaded machine, a candidate whose babble scored chrF 3.5
against the base model's babble at 5.6 while its NLL was 0.44 lower), so it cannot tell noise
from a real loss, and a small validation side must not refuse (or promote) on it. The
collapses the reply check exists for were measured on validation sides of 40 and more.
A refusal names the number that failed. Validation NLL alone is blind: it can fall while the
replies collapse (measured on outside data), hence the replies.

Publishing is the cycle's last step: the registry gets the bytes and record, then the report,
then the active pointer moves by compare-and-set from the version that was active when the
cycle started, so a rollback made meanwhile is never overwritten. A process killed before that
last move leaves the service as it was.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from bot.core.store import AdapterRecord, StoreError
from bot.core.store.registry import Registry
from trainer.quality import Interval, Quality, Scores

log = logging.getLogger(__name__)

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


class PublishRefused(StoreError):
    """The active adapter changed while the candidate trained; nothing was swapped."""

    def __init__(self, message: str, version: str):
        super().__init__(message)
        self.version = version


async def publish(registry: Registry, record: AdapterRecord, blob: bytes, report: dict,
                  png: bytes | None) -> AdapterRecord:
    """Save the candidate and its report in one server's `registry`, then make it that
    server's active adapter if `record.parent` still serves it.

    Raises PublishRefused (the adapter stays in the registry, inactive) when the active version
    moved away from the parent meanwhile.
    """
    saved = await registry.save(record, blob)
    # The report lands before activation, so the bot can post it as soon as it hears the event.
    await registry.save_report(saved.version, {**report, "version": saved.version}, png)
    try:
        await registry.activate(saved.version, expected=record.parent)
    except StoreError as error:
        raise PublishRefused(f"saved as {saved.version} but not activated: {error}",
                             saved.version) from None
    log.info("published %s (parent %s, sha256 %s…)", saved.version, record.parent,
             saved.sha256[:12])
    return saved
