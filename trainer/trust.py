"""What a cycle learns: only what the community endorses (issue 25). A pure policy: it reads the
rated exchanges (every rating and teaching with its moderator) and the admins' decisions, and
returns the endorsed view the data set and the gate's references are built from, the items held
for review and what each moderator's signal became.

Every cycle recomputes it from every rated exchange, so a distrust or a review decision takes
effect from the next cycle, on old data as on new. In order:

1. Distrust: a distrusted moderator's ratings and teachings are dropped.
2. Holds: a taught reply that carries a link (a URL, www., or a bare domain of a common
   top-level domain such as example.com), a Discord invite or a mention (@everyone, @here,
   <@id>, <@!id>, <@&id>, <#id>) is held for an admin's review: not trained on and no gate
   reference. So is a taught reply that repeats, exactly or nearly, on at least
   TRUST_REPEAT_PROMPTS different prompts it has nothing to do with (no content word in
   common; whoever taught it), and a 👍 on a bot reply that carries a link, an invite or a
   mention. "Nearly" is a Jaccard similarity of at least
   NEAR_DUPLICATE between the character trigram sets of the normalised texts (NFKC, case-folded,
   punctuation and symbols gone, spaces collapsed): spam variants that change a word or two
   score 0.6-0.9, different everyday replies below 0.3. Prompts that similar count as one.
   A held or rejected teaching takes its moderator's rating of the same exchange with it (one
   say on one exchange). An item an admin approved trains (and counts as agreed); one rejected
   is dropped for good.
3. Bounded share: a signal is one moderator's say on one exchange (their rating, their teaching
   or both). It is agreed when another moderator gave the same rating there or taught a
   near-identical reply, or an admin approved it. When two or more moderators give at least
   TRUST_MIN_SIGNALS signals each, each moderator keeps at most max(TRUST_MIN_SIGNALS,
   TRUST_MAX_SHARE x all signals) unagreed signals, the newest (the store gives the rated
   exchanges newest first); the older rest is dropped, not down-weighted, so the bound is
   exact. With a single such moderator there is no bound: a
   server with one moderator learns from them (the holds still apply).

The operator's imports (`python -m trainer import`, moderator "import") are exempt from all
three: the operator chose those pairs.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from bot.core.store import Correction, HeldItem, RatedExchange, TrustState

HASH_SHOWN = 16  # as much of a moderator's hash as a report shows (as "train now" requests do)
NEAR_DUPLICATE = 0.6  # trigram Jaccard from which two texts are the same text
GRAM = 3
HAN = re.compile(r"[\u4e00-\u9fff]")
# Words too common to tie a reply to a prompt's topic.
STOP_WORDS = frozenset(
    "the and you your for are can how what with this that have has was will would could please "
    "just not but all any our out get got too very its from they them there then than when "
    "where why who which does did into about want need like know some more much many also been "
    "being here one yes now today".split())
STOP_PAIRS = frozenset(
    "我们 您的 你的 可以 一下 什么 怎么 不是 没有 一个 请问 我的 是不 帮我 您可 在哪".split())

MENTION = re.compile(r"@everyone|@here|<@[!&]?\d+>|<#\d+>")
INVITE = re.compile(r"discord(?:app)?\.(?:gg|com/invite|me)/|discord\s*\.\s*gg", re.IGNORECASE)
LINK = re.compile(
    r"[a-z][a-z0-9+.-]*://|\bwww\.|"
    r"\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|io|gg|co|me|info|biz|xyz|ru|cn|uk|de|app|"
    r"dev|ly|link|site|online|shop|store|top|club|tk|ml|ga|cf|us|tv|cc|vip|win|bid|pw)\b",
    re.IGNORECASE)


@dataclass(frozen=True)
class TrustPolicy:
    """The bounds (settings TRUST_MAX_SHARE, TRUST_MIN_SIGNALS, TRUST_REPEAT_PROMPTS)."""

    max_share: float = 0.5
    min_signals: int = 20
    repeat_prompts: int = 3

    @classmethod
    def from_settings(cls, settings) -> TrustPolicy:
        return cls(max_share=settings.trust_max_share, min_signals=settings.trust_min_signals,
                   repeat_prompts=settings.trust_repeat_prompts)


@dataclass
class ModeratorCount:
    """What one moderator's signals became this cycle."""

    trained: int = 0  # signals kept (agreed ones included)
    agreed: int = 0  # kept because another moderator or an admin agreed
    capped: int = 0  # unagreed signals over the bound, dropped
    held: int = 0  # items held for review (pending)
    rejected: int = 0  # items an admin rejected
    distrusted: int = 0  # ratings and teachings dropped because they are distrusted


@dataclass
class Verdict:
    rated: list[RatedExchange]  # the endorsed view: what trains and what the gate reads
    held: list[HeldItem]  # pending review (new or held before): not trained on
    moderators: dict[str, ModeratorCount] = field(default_factory=dict)  # by moderator hash
    cap: int | None = None  # unagreed signals one moderator may give (None: no bound)

    def counts(self) -> dict:
        """Totals for the cycle's data counts (the adapter's record, /adapter status)."""
        totals = {name: sum(getattr(c, name) for c in self.moderators.values())
                  for name in ("capped", "rejected", "distrusted")}
        return {"moderators": sum(1 for c in self.moderators.values() if c.trained),
                "cap": self.cap, "held": len(self.held), **totals}

    def note(self) -> str:
        """Each moderator's counts in one line for the report (by the start of their hash)."""
        names = [f.name for f in fields(ModeratorCount)]
        rows = [f"{m[:HASH_SHOWN]} " + "/".join(str(getattr(c, n)) for n in names)
                for m, c in sorted(self.moderators.items())]
        return f"moderators ({'/'.join(names)}): " + ("; ".join(rows) or "none")


def marks(text: str) -> list[str]:
    """What in `text` holds it for review: "link", "invite", "mention" (none: [])."""
    found = ["invite"] if INVITE.search(text) else ["link"] if LINK.search(text) else []
    return found + (["mention"] if MENTION.search(text) else [])


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation and symbols out, spaces collapsed."""
    kept = "".join(" " if unicodedata.category(c)[0] in "PSZ" else c
                   for c in unicodedata.normalize("NFKC", text).casefold())
    return " ".join(kept.split())


def grams(text: str) -> frozenset[str]:
    """The character trigrams of the normalised text (a shorter text is its own gram)."""
    norm = normalise(text) or text.strip().casefold()
    if len(norm) <= GRAM:
        return frozenset({norm})
    return frozenset(norm[i:i + GRAM] for i in range(len(norm) - GRAM + 1))


def content(text: str) -> frozenset[str]:
    """The content words of `text`: English words of three letters or more outside STOP_WORDS,
    by their first four letters (shipping ~ ship, costs ~ cost), and Chinese character pairs
    outside STOP_PAIRS."""
    norm = normalise(text)
    words = {w[:4] for w in re.findall(r"[a-z]{3,}", norm) if w not in STOP_WORDS}
    han = "".join(HAN.findall(norm))
    return frozenset(words | ({han[i:i + 2] for i in range(len(han) - 1)} - STOP_PAIRS))


def related(prompt: str, reply: str) -> bool:
    """The reply shares a content word with the prompt: an answer on its topic."""
    return bool(content(prompt) & content(reply))


def similar(a: frozenset[str], b: frozenset[str]) -> bool:
    """Jaccard(a, b) >= NEAR_DUPLICATE; sizes too far apart can never reach it."""
    small, large = sorted((len(a), len(b)))
    if small < NEAR_DUPLICATE * large:
        return False
    shared = len(a & b)
    return shared >= NEAR_DUPLICATE * (small + large - shared)


def clusters(texts: list[str]) -> list[int]:
    """A cluster number per text: each joins the first earlier cluster whose first text it is
    near-identical to (leader clustering, deterministic in input order)."""
    leaders: list[frozenset[str]] = []
    by_text: dict[frozenset[str], int] = {}  # texts equal once normalised are compared once
    found = []
    for mine in map(grams, texts):
        if mine not in by_text:
            by_text[mine] = next((n for n, leader in enumerate(leaders)
                                  if similar(mine, leader)), len(leaders))
            if by_text[mine] == len(leaders):
                leaders.append(mine)
        found.append(by_text[mine])
    return found


class _Signals:
    """One exchange's ratings and teachings while the policy filters them."""

    def __init__(self, item: RatedExchange):
        self.item = item
        self.votes = dict(item.votes)
        self.teachings = {c.moderator_hash: c for c in item.corrections}

    def moderators(self) -> set[str]:
        return set(self.votes) | set(self.teachings)

    def drop(self, moderator: str) -> None:
        self.votes.pop(moderator, None)
        self.teachings.pop(moderator, None)

    def endorsed(self) -> RatedExchange | None:
        if not self.votes and not self.teachings:
            return None
        corrections = sorted(self.teachings.values(), key=lambda c: c.created_at)
        return RatedExchange(exchange=self.item.exchange, score=sum(self.votes.values()),
                             ratings=len(self.votes), votes=self.votes, corrections=corrections)


def judge(rated: list[RatedExchange], state: TrustState, policy: TrustPolicy,
          exempt: Iterable[str] = ()) -> Verdict:
    """The endorsed view of `rated` (newest first) under the admins' `state` and `policy`;
    moderators in `exempt` (the importer) are neither held, bounded nor counted."""
    exempt = frozenset(exempt)
    signals = [_Signals(item) for item in rated]
    counts: dict[str, ModeratorCount] = {}

    def count(moderator: str) -> ModeratorCount:
        return counts.setdefault(moderator, ModeratorCount())

    for exchange in signals:
        for moderator in exchange.moderators() & state.distrusted:
            count(moderator).distrusted += (moderator in exchange.votes) + (
                moderator in exchange.teachings)
            exchange.drop(moderator)
    held, approved = _holds(signals, state, policy, exempt, count)
    cap = _bound(signals, policy, exempt, approved, count)
    endorsed = [e for e in (s.endorsed() for s in signals) if e is not None]
    return Verdict(rated=endorsed, held=held, moderators=counts, cap=cap)


def _holds(signals: list[_Signals], state: TrustState, policy: TrustPolicy,
           exempt: frozenset[str], count) -> tuple[list[HeldItem], set[tuple[int, str]]]:
    """Take the held and rejected items out of `signals`; returns the items pending review
    and the (exchange index, moderator) signals an admin approved."""
    held: list[HeldItem] = []
    approved: set[tuple[int, str]] = set()
    for index, item in _suspects(signals, policy, exempt):
        status = state.decisions.get(item.id)
        if status == "approved":
            approved.add((index, item.moderator_hash))
            continue
        exchange = signals[index]
        if item.kind == "teach":
            # The whole say goes with the teaching: a spammer's 👍 beside their held advert
            # would otherwise count towards the share bound and cap an honest moderator.
            exchange.drop(item.moderator_hash)
        else:
            exchange.votes.pop(item.moderator_hash, None)
        if status == "rejected":
            count(item.moderator_hash).rejected += 1
        else:
            count(item.moderator_hash).held += 1
            held.append(item)
    return held, approved


def _suspects(signals: list[_Signals], policy: TrustPolicy,
              exempt: frozenset[str]) -> list[tuple[int, HeldItem]]:
    """Every teaching and 👍 the rules hold, with the index of its exchange."""
    taught = [(index, c) for index, s in enumerate(signals)
              for c in s.teachings.values() if c.moderator_hash not in exempt]
    repeats = _repeats(signals, taught, policy.repeat_prompts)
    found = []
    for (index, correction), repeated in zip(taught, repeats, strict=True):
        reasons = marks(correction.text) + ([repeated] if repeated else [])
        if reasons:
            found.append((index, HeldItem(
                exchange_id=correction.exchange_id, moderator_hash=correction.moderator_hash,
                kind="teach", text=correction.text, reason=", ".join(reasons),
                moderator_name=correction.moderator_name)))
    for index, exchange in enumerate(signals):
        reasons = marks(exchange.item.exchange.reply)
        for moderator, value in exchange.votes.items():
            if reasons and value > 0 and moderator not in exempt:
                found.append((index, HeldItem(
                    exchange_id=exchange.item.exchange.id, moderator_hash=moderator,
                    kind="like", text=exchange.item.exchange.reply,
                    reason=", ".join(reasons))))
    return found


def _repeats(signals: list[_Signals], taught: list[tuple[int, Correction]],
             at_least: int) -> list[str | None]:
    """Per teaching, why its text repeats ("repeated on N unrelated prompts") or None: the
    near-identical teachings of a text, taught on `at_least` different prompts that share no
    content word with it. (The same answer to one question asked in other words shares a word
    with most of them: of the 75 distinct answers of the support dialogues, 48 are given to 3
    or more different prompts, 2 to 3 or more unrelated ones.)"""
    groups = clusters([c.text for _, c in taught])
    prompts = [signals[i].item.exchange.user_message for i, _ in taught]
    prompt_groups = clusters(prompts)
    unrelated: dict[int, set[int]] = {}
    for (_, correction), group, prompt, prompt_group in zip(taught, groups, prompts,
                                                            prompt_groups, strict=True):
        unrelated.setdefault(group, set())
        if not related(prompt, correction.text):
            unrelated[group].add(prompt_group)
    return [f"repeated on {len(unrelated[g])} unrelated prompts"
            if len(unrelated[g]) >= at_least else None for g in groups]


def _bound(signals: list[_Signals], policy: TrustPolicy, exempt: frozenset[str],
           approved: set[tuple[int, str]], count) -> int | None:
    """Drop each moderator's unagreed signals over the cap, oldest first; returns the cap
    (None when fewer than two moderators give TRUST_MIN_SIGNALS signals or more: a handful of
    ratings by a second moderator must not cut the main moderator's data in half)."""
    agreed: dict[str, list[int]] = {}
    alone: dict[str, list[int]] = {}
    for index, exchange in enumerate(signals):  # newest first
        for moderator in sorted(exchange.moderators() - exempt):
            backed = (index, moderator) in approved or _agreed(exchange, moderator)
            (agreed if backed else alone).setdefault(moderator, []).append(index)
    moderators = set(agreed) | set(alone)
    total = sum(map(len, agreed.values())) + sum(map(len, alone.values()))
    substantial = [m for m in moderators
                   if len(agreed.get(m, [])) + len(alone.get(m, [])) >= policy.min_signals]
    cap = (max(policy.min_signals, math.ceil(policy.max_share * total))
           if len(substantial) > 1 else None)
    for moderator in moderators:
        mine, theirs = count(moderator), alone.get(moderator, [])
        over = theirs[cap:] if cap is not None else []
        for index in over:
            signals[index].drop(moderator)
        mine.agreed = len(agreed.get(moderator, []))
        mine.capped = len(over)
        mine.trained = mine.agreed + len(theirs) - len(over)
    return cap


def _agreed(exchange: _Signals, moderator: str) -> bool:
    """Another moderator gave the same rating here, or taught a near-identical reply."""
    others = exchange.moderators() - {moderator}
    vote = exchange.votes.get(moderator)
    if vote is not None and any(exchange.votes.get(o) == vote for o in others):
        return True
    mine = exchange.teachings.get(moderator)
    return mine is not None and any(
        similar(grams(mine.text), grams(exchange.teachings[o].text))
        for o in others if o in exchange.teachings)
