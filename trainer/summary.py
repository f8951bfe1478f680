"""What a cycle learned, held or refused, in words moderators read.

The numbers of a cycle mean little to the people who rate the bot. So every cycle, promoted,
refused or skipped, carries a summary: the replies taught since the previous cycle (near
duplicates counted together, with who taught them), what was held for review and why, three
exam prompts answered before (the adapter in service) and after (the candidate), and the
outcome with the check that decided it. The mod-log post, `/adapter status` and the report
file show it; the bot words it (bot/service/answer_text.py: learned_lines).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.store import HeldItem, RatedExchange
from bot.core.text import snippet
from trainer.trust import grams, similar

TOP_TAUGHT = 5
HELD_SHOWN = 3


@dataclass
class _Taught:
    text: str
    count: int
    names: set[str]
    grams: frozenset[str]


def taught_since(endorsed: list[RatedExchange], since: float | None) -> list[dict]:
    """The taught replies in the endorsed view newer than `since` (all when None), near
    duplicates together: [{"text", "count", "moderators"}], most taught first."""
    groups: list[_Taught] = []
    for item in endorsed:
        for correction in item.corrections:
            if since is not None and correction.created_at <= since:
                continue
            shape = grams(correction.text)
            group = next((g for g in groups if similar(g.grams, shape)), None)
            if group is None:
                group = _Taught(correction.text, 0, set(), shape)
                groups.append(group)
            group.count += 1
            group.names.add(correction.moderator_name or "a moderator")
    groups.sort(key=lambda g: -g.count)
    return [{"text": g.text, "count": g.count, "moderators": sorted(g.names)}
            for g in groups[:TOP_TAUGHT]]


def held_items(held: list[HeldItem], newly: int) -> dict:
    return {"pending": len(held), "new": newly,
            "examples": [{"text": item.text, "reason": item.reason,
                          "moderator": item.moderator_name or "a moderator"}
                         for item in sorted(held, key=lambda i: -i.held_at)[:HELD_SHOWN]]}


def exam_answers(samples: list[dict] | None, parent: str) -> list[dict]:
    """Up to three exam prompts with the reply before (in service) and after (candidate)."""
    return [{"prompt": s["prompt"], "reference": s["reference"],
             "before": s["active"] if s.get("active") is not None else s["base"],
             "before_version": parent if s.get("active") is not None else "base",
             "after": s["candidate"]}
            for s in (samples or [])]


def headline(outcome: str, version: str, parent: str | None, reason: str,
             failed: str | None) -> str:
    if outcome == "promoted":
        named = f"{version} (was {parent})" if version else f"a new adapter over {parent}"
        return f"Promoted {named}: {snippet(reason, 200)}"
    if outcome == "rejected" and failed:
        return f"Refused by the {failed} check, {parent} keeps serving: {snippet(reason, 200)}"
    return f"{outcome.capitalize()}: {snippet(reason, 200)}"
