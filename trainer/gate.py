"""The gate: a candidate goes into service only if it beats what serves on a yardstick no single
moderator moves.

The gate reads `trainer.quality`'s numbers, measured on the server's exam (`trainer.exam`) and
the validation side for the base model, the active adapter and the candidate. In order, the
candidate must:

1. have a finite validation NLL;
2. not forget (`trainer.forgetting`): its reply-format NLL on the project's general text may
   exceed the base model's by at most GATE_FORGET_NATS;
3. not degenerate (`trainer.degeneracy`): its replies to the exam prompts may not share one
   long passage, collapse, or carry new links, beyond what the base model, the active adapter
   and the references themselves do (judged from MIN_DEGENERACY_PROMPTS prompts);
4. against the active adapter (the base model when none serves) and, when an adapter serves,
   against the base model too: not reply worse beyond noise (the 90 % bootstrap interval of
   its mean sentence chrF minus the other's does not lie wholly below -GATE_CHRF_MARGIN), not
   reply worse at all where the exam is read (the mean difference not below
   -GATE_CHRF_MARGIN: a lower validation loss is not a better bot, and on the chit-chat
   dialogues an import that lowered the loss by 2.4 nats cut the replies to a few words and
   its held-out 👍 share from 0.32 to 0.02);
5. and be better beyond noise than the active adapter (the base model when none serves):
   where the exam can tell (a fair interval, below), on chrF (the whole interval above 0);
   where it cannot, on at least one number: preference accuracy (the whole bootstrap interval
   of its hits minus the other's above 0; the base model ties every preference: 0.5), or a
   validation NLL lower by GATE_MARGIN and beyond noise (the bootstrap interval of the other's
   NLL minus the candidate's, paired over the validation targets, above 0). Against the base
   model while an adapter serves, not worse is enough: the active adapter beat it to be
   promoted, and a second win on another ten-odd fair prompts refused a chit-chat candidate
   that beat the active adapter by +1.65 chrF [+0.54, +2.76] on 13 of them.

A chrF interval is read on the exam prompts not taught after the other model's own replies
(`trainer.quality.reply_difference`): on those it starts from its worst, so any other model
looks better there. With too few of them left it is read on every prompt and may refuse, never
promote; then preference accuracy or NLL decide against the base model. Where a fair interval
exists, neither does: on the chit-chat dialogues imports promoted on the loss with exam chrF
level (+0.4 and +0.8, intervals across 0) cut the held-out 👍 share from 0.33 to 0.13-0.22.
And an active adapter is replaced only on a fair chrF win: where the exam cannot tell, the
adapter moderators have been rating keeps serving (candidates promoted over it on the loss or
on preference accuracy cut the chit-chat share by 4 prompts of 54 in two runs of four).

A "win" that the noise could have made (a 0.013 preference-accuracy gain on a few pairs)
promotes nothing. With fewer than MIN_REPLY_PROMPTS exam references, chrF neither refuses nor
promotes (a bootstrap over a handful of prompts is far too sure of itself: one prompt gives the
interval [d, d]); with fewer than MIN_PREFERENCES preferences, preference accuracy does not
promote. The reason says so. A refusal names the check that failed (`failed`): nll,
forgetting, degeneracy, chrf or improvement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer import degeneracy
from trainer.quality import Interval, Quality, Scores

BASE_PREFERENCE = 0.5  # the reference model itself ties on every pair
MIN_REPLY_PROMPTS = 10  # fewer references than this: the replies' scores decide nothing
MIN_PREFERENCES = 10  # fewer preferences than this: preference accuracy promotes nothing
MIN_DEGENERACY_PROMPTS = 5  # replies needed before shares of them mean anything


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    failed: str | None = None  # nll, forgetting, degeneracy, chrf or improvement


@dataclass(frozen=True)
class GateRules:
    """The settings the decision reads."""

    margin: float = 0.01  # GATE_MARGIN: nats the validation NLL must fall by to count
    chrf_margin: float = 0.0  # GATE_CHRF_MARGIN
    forget_nats: float = 0.5  # GATE_FORGET_NATS

    @classmethod
    def from_settings(cls, settings) -> GateRules:
        return cls(margin=settings.gate_margin, chrf_margin=settings.gate_chrf_margin,
                   forget_nats=settings.gate_forget_nats)


@dataclass(frozen=True)
class _Other:
    """A model the candidate is compared with, and the intervals of the differences."""

    name: str
    scores: Scores
    chrf: Interval | None  # None: too few references to read
    preference: Interval | None  # None: too few preferences to read
    nll: Interval | None = None  # its NLL minus the candidate's per target (None: not paired)
    serving: bool = False  # the active adapter: only better replies replace it
    needs_win: bool = True  # False: the base model while an adapter serves (not worse is enough)
    exam_prompts: int = 0  # the whole exam's, which `chrf` may have been read on a part of


def gate(quality: Quality, rules: GateRules) -> GateDecision:
    """Whether the candidate in `quality` may replace the active adapter (see the module)."""
    refused = _health(quality, rules)
    if refused is not None:
        return refused
    wins = []
    for other in _others(quality):
        outcome = _against(other, quality.candidate, rules)
        if isinstance(outcome, GateDecision):
            return outcome
        wins.append(f"{other.name}: {outcome}")
    return GateDecision(True, _notes(quality) + "candidate beats the " + "; the ".join(wins))


def _health(quality: Quality, rules: GateRules) -> GateDecision | None:
    """A refusal on the checks no moderator's data can move, or None."""
    candidate, base = quality.candidate, quality.base
    if not math.isfinite(candidate.nll) and math.isfinite(base.nll):
        return GateDecision(False, f"val loss: the candidate's is {candidate.nll}, not a number",
                            "nll")
    if candidate.general_nll is not None and base.general_nll is not None:
        rise = candidate.general_nll - base.general_nll
        if not rise <= rules.forget_nats:
            return GateDecision(False, f"forgetting: its NLL on general text is "
                                       f"{candidate.general_nll:.3f} against the base model's "
                                       f"{base.general_nll:.3f}, {rise:+.3f} nats (at most "
                                       f"GATE_FORGET_NATS={rules.forget_nats:g})", "forgetting")
    figures = quality.replies
    if quality.prompts >= MIN_DEGENERACY_PROMPTS and "candidate" in figures:
        others = {name: figures[key] for name, key in (("base model", "base"),
                                                        ("active adapter", "active"))
                  if key in figures}
        why = degeneracy.refusal(figures["candidate"], others, figures.get("references"))
        if why:
            return GateDecision(False, f"degeneracy: {why}", "degeneracy")
    return None


def _others(quality: Quality) -> list[_Other]:
    judged = quality.prompts >= MIN_REPLY_PROMPTS  # else no chrF interval is read
    counted = quality.pairs + quality.labels >= MIN_PREFERENCES
    others = [_Other("base model", quality.base, quality.vs_base if judged else None,
                     quality.preference_vs_base if counted else None, quality.nll_vs_base,
                     needs_win=quality.active is None, exam_prompts=quality.prompts)]
    if quality.active is not None:
        others.insert(0, _Other("active adapter", quality.active,
                                quality.vs_active if judged else None,
                                quality.preference_vs_active if counted else None,
                                quality.nll_vs_active, serving=True,
                                exam_prompts=quality.prompts))
    return others


def _notes(quality: Quality) -> str:
    notes = ""
    if not quality.prompts:
        notes += ("no exam references yet, so no replies were scored; decided on preference "
                  "accuracy and NLL. ")
    elif quality.prompts < MIN_REPLY_PROMPTS:
        notes += (f"only {quality.prompts} exam reference(s) (fewer than {MIN_REPLY_PROMPTS}), "
                  f"too few to judge the replies; decided on preference accuracy and NLL. ")
    if 0 < quality.pairs + quality.labels < MIN_PREFERENCES:
        notes += (f"only {quality.pairs + quality.labels} validation preference(s) (fewer than "
                  f"{MIN_PREFERENCES}): preference accuracy promotes nothing. ")
    return notes


def _against(other: _Other, candidate: Scores, rules: GateRules) -> GateDecision | str:
    """A refusal, or the numbers on which the candidate beats `other` beyond noise."""
    interval = other.chrf
    if interval is not None and not interval.high >= -rules.chrf_margin:
        return GateDecision(False, f"chrF: the candidate's replies score worse than the "
                                   f"{other.name}'s beyond noise: {_read(other, candidate)}; "
                                   f"its bootstrap interval [{interval.low:+.2f}, "
                                   f"{interval.high:+.2f}] lies below "
                                   f"-GATE_CHRF_MARGIN={-rules.chrf_margin:g}", "chrf")
    if interval is not None and interval.mean < -rules.chrf_margin:
        return GateDecision(False, f"chrF: the candidate's replies score lower than the "
                                   f"{other.name}'s: {_read(other, candidate)}; a lower loss "
                                   f"or a preference gain does not promote replies that "
                                   f"scored lower", "chrf")
    if other.serving and (interval is None or not interval.fair):
        return GateDecision(False, f"the exam cannot tell the candidate's replies from the "
                                   f"active adapter's (under {MIN_REPLY_PROMPTS} prompts not "
                                   f"taught after its replies); loss or preference gains alone "
                                   f"never replace what serves: teach or /exam add", "improvement")
    if not other.needs_win:
        return "not worse" + ("" if interval is None else
                              f" (chrF {interval.mean:+.2f} on {_prompts(interval)}, interval "
                              f"[{interval.low:+.2f}, {interval.high:+.2f}])")
    if interval is not None and interval.fair and not interval.low > 0:
        return GateDecision(False, f"the candidate's replies are not better than the "
                                   f"{other.name}'s beyond noise on {_prompts(interval)} (chrF "
                                   f"{interval.mean:+.2f}, interval [{interval.low:+.2f}, "
                                   f"{interval.high:+.2f}]); where the exam can tell, a lower "
                                   f"loss or a preference gain alone does not promote",
                            "improvement")
    better = _wins(other, candidate, rules.margin)
    if better:
        return ", ".join(better)
    return GateDecision(False, f"the candidate is better than the {other.name} beyond noise on "
                               f"none of: {_standing(other, candidate, rules.margin)}",
                        "improvement")


def _wins(other: _Other, candidate: Scores, margin: float) -> list[str]:
    theirs, found = other.scores, []
    if other.chrf is not None and other.chrf.fair and other.chrf.low > 0:
        found.append(f"chrF {candidate.chrf:.2f} > {theirs.chrf:.2f} "
                     f"(interval [{other.chrf.low:+.2f}, {other.chrf.high:+.2f}])")
    if other.preference is not None and other.preference.low > 0:
        found.append(f"preference accuracy {candidate.preference_accuracy:.3f} > "
                     f"{_preference(theirs):.3f} (interval [{other.preference.low:+.3f}, "
                     f"{other.preference.high:+.3f}])")
    lower = other.nll is None or other.nll.low > 0  # beyond noise, where paired
    if math.isfinite(candidate.nll) and candidate.nll <= theirs.nll - margin and lower:
        found.append(f"val loss {candidate.nll:.4f} below {theirs.nll:.4f} by "
                     f"{theirs.nll - candidate.nll:.4f} (margin {margin:g})")
    return found


def _read(other: _Other, candidate: Scores) -> str:
    """The chrF difference the gate read, and the mean scores of the whole exam when it read
    fewer prompts: a moderator sees why higher whole-exam scores can still be refused."""
    interval, theirs = other.chrf, other.scores
    said = f"{interval.mean:+.2f} on {_prompts(interval)}"
    if interval.prompts is not None and interval.prompts < other.exam_prompts:
        return (f"{said} not taught after its replies (on all {other.exam_prompts}: "
                f"{candidate.chrf:.2f} against {theirs.chrf:.2f})")
    return f"{said} ({candidate.chrf:.2f} against {theirs.chrf:.2f})"


def _prompts(interval: Interval) -> str:
    return "the exam" if interval.prompts is None else f"{interval.prompts} exam prompts"


def _unfair(other: _Other) -> str:
    return ("" if other.chrf.fair else
            f"; too few prompts were not chosen against the {other.name} for a win to count")


def _preference(scores: Scores) -> float:
    return BASE_PREFERENCE if scores.preference_accuracy is None else scores.preference_accuracy


def _standing(other: _Other, candidate: Scores, margin: float) -> str:
    """Where each number stands, for a refusal."""
    theirs = other.scores
    chrf = ("reply score (no references to judge)" if other.chrf is None else
            f"reply score (chrF {candidate.chrf:.2f} vs {theirs.chrf:.2f}, difference "
            f"{other.chrf.mean:+.2f} on {_prompts(other.chrf)}, interval "
            f"[{other.chrf.low:+.2f}, {other.chrf.high:+.2f}]{_unfair(other)})")
    preference = ("preference accuracy (too few preferences)"
                  if other.preference is None or candidate.preference_accuracy is None else
                  f"preference accuracy ({candidate.preference_accuracy:.3f} vs "
                  f"{_preference(theirs):.3f}, interval [{other.preference.low:+.3f}, "
                  f"{other.preference.high:+.3f}])")
    nll = "" if other.nll is None else (f", interval of the fall per target "
                                        f"[{other.nll.low:+.3f}, {other.nll.high:+.3f}]")
    return (f"{chrf}, {preference} or val loss ({candidate.nll:.4f} vs {theirs.nll:.4f}, "
            f"margin {margin:g}{nll})")
