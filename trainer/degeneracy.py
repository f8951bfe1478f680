"""Checks on a model's own generated replies that no moderator's data can move.

A candidate that opens most replies with the same spam sentence, collapses to one short answer,
or starts emitting links can still score well on NLL or on references a bad actor wrote. So the
gate also reads the candidate's greedy replies on the exam prompts, and compares them with the
base model's, the active adapter's and the endorsed references' own figures:

- `top_shared`: the largest share of replies that contain one and the same long character
  n-gram (N_CHARS characters, whitespace collapsed, case folded; characters, so it reads
  Chinese too), a shorter reply counting as a whole. Spam repeated across unrelated prompts,
  or a collapse to one answer ("A."), drives it towards 1; a templated voice the references
  share is allowed up to the references' own share.
- `distinct_2`: distinct word bigrams (each CJK character a word) over all bigrams: a backstop
  for a collapse into a few answers; a learned voice lowers it too, so its floor is low.
- `link_replies`: replies with a link, a Discord invite or a mention that is not in their
  prompt.

The thresholds are relative, so the check neither depends on the model's size nor refuses a
voice the community endorsed.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass

from trainer.trust import INVITE, LINK, MENTION

N_CHARS = 24  # long enough that ordinary phrases ("thank you for your order") rarely fill it
SHARED_MARGIN = 0.15  # share of replies the top n-gram may cover beyond the others' highest
# ...and never fewer replies than this beyond it: over the quick demo's 6 exam prompts one reply
# is 17 %, and a healthy candidate sharing a phrase in 3 replies against the base model's 2 was
# refused on the share alone.
SHARED_EXCESS_REPLIES = 3
# distinct-2 may fall to this fraction of the lower of the base model's and the references'
# (not the active adapter's, so cycle after cycle cannot ratchet it down). A learned voice
# repeats itself more than either: on the support dialogues honest candidates reached 0.13-0.23
# against the base model's 0.40 and the references' 0.62-0.70; a collapse to "A." is ~0.05.
DISTINCT_FLOOR = 0.2
LINK_ALLOWANCE = 1  # replies with a new link beyond the others' count

_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]|[^\s\u3040-\u30ff\u3400-\u9fff"
                   r"\uf900-\ufaff]+")


@dataclass(frozen=True)
class ReplyFigures:
    """One model's (or the references') figures over the same prompts."""

    replies: int
    top_shared: float
    distinct_2: float
    link_replies: int
    words: float = 0.0  # mean words per reply (each CJK character a word)

    def as_dict(self) -> dict:
        return asdict(self)


def links_in(text: str) -> set[str]:
    """The links, invites and mentions in `text`, lower-cased (the trust policy's patterns:
    what holds a teaching for review is what counts in a reply)."""
    return {match.group(0).lower() for pattern in (LINK, INVITE, MENTION)
            for match in pattern.finditer(text)}


def passages(reply: str, n: int = N_CHARS) -> set[str]:
    """The `n`-character n-grams of `reply`, whitespace collapsed and case folded (a reply
    shorter than that: itself as a whole)."""
    text = " ".join(reply.casefold().split())
    return {text[i:i + n] for i in range(len(text) - n + 1)} or {text}


def top_shared(replies: list[str], n: int = N_CHARS) -> float:
    """The largest share of `replies` that contain one common `n`-character n-gram (a reply
    shorter than that counts as a whole)."""
    if len(replies) < 2:
        return 0.0
    counts: Counter[str] = Counter()
    for reply in replies:
        counts.update(passages(reply, n))
    return max(counts.values(), default=0) / len(replies)


def distinct_2(replies: list[str]) -> float:
    """Distinct word bigrams over all bigrams of `replies`, each reply between start and end
    marks (1.0 when there are no replies)."""
    bigrams = []
    for reply in replies:
        words = ["<s>", *_WORD.findall(reply.casefold()), "</s>"]  # one-word replies count
        bigrams.extend(zip(words, words[1:], strict=False))
    return len(set(bigrams)) / len(bigrams) if bigrams else 1.0


def figures(replies: list[str], prompts: list[str]) -> ReplyFigures:
    """The figures of `replies`, each answering the prompt at the same place of `prompts`."""
    new_links = sum(bool(links_in(reply) - links_in(prompt))
                    for reply, prompt in zip(replies, prompts, strict=True))
    words = sum(len(_WORD.findall(reply)) for reply in replies) / max(1, len(replies))
    return ReplyFigures(len(replies), top_shared(replies), distinct_2(replies), new_links,
                        words)


def refusal(candidate: ReplyFigures, others: dict[str, ReplyFigures],
            references: ReplyFigures | None) -> str | None:
    """Why the candidate's replies are degenerate next to `others` (name -> figures, the base
    model and the active adapter) and the endorsed references, or None when they are not."""
    if not candidate.replies:
        return None
    yardsticks = dict(others, **({"references": references} if references else {}))
    highest = max(f.top_shared for f in yardsticks.values())
    excess = max(SHARED_MARGIN, SHARED_EXCESS_REPLIES / candidate.replies)
    if candidate.top_shared > highest + excess + 1e-9:
        return (f"{candidate.top_shared:.0%} of its replies share one {N_CHARS}-character "
                f"passage (the highest of {', '.join(yardsticks)}: {highest:.0%})")
    fixed = [f.distinct_2 for f in (references, others.get("base model")) if f]
    if fixed and candidate.distinct_2 < DISTINCT_FLOOR * min(fixed):
        return (f"its replies collapsed: distinct word pairs {candidate.distinct_2:.2f} "
                f"against {min(fixed):.2f} (base model or references; the floor is "
                f"{DISTINCT_FLOOR:g} of that)")
    link_bound = max(f.link_replies for f in yardsticks.values()) + LINK_ALLOWANCE
    if candidate.link_replies > link_bound:
        return (f"{candidate.link_replies} of its replies carry a link, invite or mention that "
                f"the prompt did not (allowed: {link_bound})")
    return None
