"""The learning benches' simulated moderator: which replies it 👍.

It scores a reply with sentence chrF against the prompt's reference and likes it at or above a
bar calibrated on the base model: the score whose pass share among the base model's pool
replies comes nearest PASS_SHARE. The bar is set per script of the prompt (CJK or Latin): chrF
counts shared character n-grams, and a Chinese reply shares far fewer with its reference than
an English one of the same quality (on both dialogue sets the base model's median pool reply
scored 1.2-1.8 in Chinese against 3.5-8.8 in English). With one bar for both, the moderator
liked half of the base model's English replies and none of its Chinese ones, so it never liked
a Chinese reply and the benches measured English only. Per script, each language's bar lets
through PASS_SHARE of the base model's replies in that language.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

PASS_SHARE = 0.25  # the share of base replies the 👍 bar lets through, in each script
MATCH_TOP = 0.1  # a matched reply's own reference ranks in this top share of its script's
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def chrf(reply: str, reference: str) -> float:
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(reply, [reference]).score


def script(prompt: str) -> str:
    """"CJK" for a prompt with Chinese characters, else "Latin"."""
    return "CJK" if CJK.search(prompt) else "Latin"


def calibrated(scores: list[float]) -> float:
    """The positive score whose pass share (at or above it) comes nearest PASS_SHARE; ties
    (many replies scoring 0) rule out the plain quantile. A reply that shares nothing with its
    reference (chrF 0) is never liked: with no positive score, any overlap passes."""
    positive = sorted({s for s in scores if s > 0})
    if not positive:
        return math.nextafter(0.0, 1.0)
    return min(positive, key=lambda t: (abs(share(scores, t) - PASS_SHARE), -t))


def share(scores: list[float], threshold: float) -> float:
    return sum(1 for s in scores if s >= threshold) / len(scores)


@dataclass(frozen=True)
class Bar:
    """The moderator's 👍 bar for each script of prompt."""

    thresholds: dict[str, float]

    @classmethod
    def calibrate(cls, rows: list[dict], scores: list[float]) -> Bar:
        """The bar from the base model's `scores` on `rows` (their prompts under "input")."""
        by_script: dict[str, list[float]] = {}
        for row, score in zip(rows, scores, strict=True):
            by_script.setdefault(script(row["input"]), []).append(score)
        return cls({name: calibrated(found) for name, found in sorted(by_script.items())})

    def likes(self, row: dict, score: float) -> bool:
        threshold = self.thresholds.get(script(row["input"]))
        if threshold is None:
            raise ValueError(f"no bar for {script(row['input'])} prompts: the pool had none")
        return score >= threshold

    def share(self, rows: list[dict], scores: list[float]) -> float:
        """The share of `scores` (one per row) the moderator likes."""
        return sum(self.likes(row, s) for row, s in zip(rows, scores, strict=True)) / len(rows)

    def shares(self, rows: list[dict], scores: list[float]) -> dict[str, float]:
        """The liked share within each script that `rows` hold."""
        found = {}
        for name in self.thresholds:
            pairs = [(r, s) for r, s in zip(rows, scores, strict=True)
                     if script(r["input"]) == name]
            if pairs:
                found[name] = sum(self.likes(r, s) for r, s in pairs) / len(pairs)
        return found

    def describe(self) -> str:
        return ", ".join(f"{name} chrF >= {t:.2f}" if t >= 0.005 else f"{name} chrF > 0"
                         for name, t in self.thresholds.items())


def matched(replies: list[str], rows: list[dict]) -> list[bool]:
    """Whether each reply is closer (sentence chrF) to its own prompt's reference than to all
    but MATCH_TOP of the other references of its script in `rows`.

    The 👍 bar asks how close a reply comes to its reference; a long fluent sentence that
    answers nothing in particular comes close to most of them (on the tiny model one constant
    sentence passes 81-100 % of the held-out references, `bench/share_ceiling.py`). Ranked
    against the other prompts' references, such a reply matches about MATCH_TOP of the time,
    however long it is: a share above that says the replies answer their own prompts.
    """
    found = []
    for reply, row in zip(replies, rows, strict=True):
        others = [r["output"] for r in rows
                  if r is not row and script(r["input"]) == script(row["input"])]
        own = chrf(reply, row["output"])
        beaten = sum(1 for other in others if chrf(reply, other) < own)
        found.append(beaten >= (1 - MATCH_TOP) * len(others))
    return found


def matched_share(replies: list[str], rows: list[dict]) -> dict[str, float]:
    """The share of `matched` replies, in all ("all") and within each script."""
    hits = matched(replies, rows)
    found = {"all": sum(hits) / len(hits)}
    for name in sorted({script(r["input"]) for r in rows}):
        mine = [hit for hit, r in zip(hits, rows, strict=True) if script(r["input"]) == name]
        found[name] = sum(mine) / len(mine)
    return found
