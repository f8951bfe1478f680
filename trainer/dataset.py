"""Rated exchanges to training examples, in exactly the format the bot serves.

The rated exchanges are the endorsed view a cycle gets from `trainer.trust.judge` (without
distrusted moderators, held teachings, or signals over a moderator's share). Every signal in
it becomes data:
- "correction": every moderator correction (one per moderator, the store keeps each
  moderator's newest), whatever the score, is an SFT target;
- "pair": each correction with the bot reply it replaced is a preference pair (chosen = the
  taught reply, rejected = the bot reply), both after the same prompt;
- "reply": the bot's reply when the exchange's score (the sum of its ratings) is positive is an
  SFT target, and also a "desirable" label;
- "undesirable": the bot's reply when the score is negative (a score of 0 gives nothing).

A liked bot reply that is near-identical (`trainer.trust.similar`) to liked replies of other
exchanges, or shares a long passage with them (`trainer.degeneracy.passages`, what the gate's
degeneracy check counts) that no taught or imported reply holds, is a stock answer: a small
model says it to many prompts, the moderator likes some of them, and training on every copy
teaches it to say it everywhere (on the chit-chat dialogues 15 of the base model's 62 liked
replies were one nonsense question; the next adapters opened 35-44 % of their replies with
it). Of such a group's replies to prompts they share no content word with
(`trainer.trust.related`: the same answer to one question asked in other words stays), only the
newest REPEATED_REPLY_TARGETS become "reply" and "desirable" examples; the rest are counted as
repeated_reply. Imported pairs are exempt: the operator chose them.

Each example is the served prompt (`bot.core.dialogue.training_ids`) followed by " " + reply +
end-of-text; the labels mask the prompt with -100 so losses count the reply tokens only. A
target or desirable reply holding U+FFFD (a character broken in decoding) is never taught: it
is dropped and counted as broken_text (a rejected or undesirable reply may hold one).

The train/validation split is decided by a hash of what the bot was asked (`asked_key`: the
dialogue and the style), so an exchange (and every example made from it) stays on the same side
from one cycle to the next, and exchanges that asked the same question go to the same side: a
question asked again and taught again must not train a candidate on the reference the gate
then examines it on (the learning benches ask every pool prompt each round).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Literal

from bot.core.dialogue import PromptTooLong, training_ids
from bot.core.store import RatedExchange
from trainer.degeneracy import N_CHARS, passages
from trainer.trust import clusters, related

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value the loss skips (torch CrossEntropyLoss default)
# Below this many exchanges a validation set would be too small to say anything.
MIN_EXCHANGES_FOR_VALIDATION = 5
BROKEN = "\ufffd"  # what a decoder writes for bytes that are not a whole character
REPEATED_REPLY_TARGETS = 2  # liked bot replies of one near-identical group that still train
IMPORTED = "import"  # the version an imported pair's reply is stored under (the operator wrote it)

Kind = Literal["reply", "correction", "pair", "desirable", "undesirable"]
TARGET_KINDS: tuple[Kind, ...] = ("reply", "correction")  # SFT targets
LABEL_KINDS: tuple[Kind, ...] = ("desirable", "undesirable")  # unpaired labels (KTO)


@dataclass(frozen=True)
class Example:
    exchange_id: str
    kind: Kind
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX over the prompt, the target ids over the reply
    # Only for kind "pair": the same prompt followed by the rejected (bot) reply.
    rejected_ids: tuple[int, ...] | None = None
    rejected_labels: tuple[int, ...] | None = None
    weight: float = 1.0

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class DataSet:
    train: list[Example]
    validation: list[Example]
    counts: dict = field(default_factory=dict)
    held_out: set[str] = field(default_factory=set)  # exchange ids on the validation side


def targets(examples: list[Example]) -> list[Example]:
    return [e for e in examples if e.kind in TARGET_KINDS]


def pairs(examples: list[Example]) -> list[Example]:
    return [e for e in examples if e.kind == "pair"]


def labels(examples: list[Example]) -> list[Example]:
    return [e for e in examples if e.kind in LABEL_KINDS]


def example_from(exchange_id: str, kind: Kind, turns, style, target: str, tokenizer,
                 max_tokens: int) -> Example:
    prompt, reply = training_ids(turns, style, target, tokenizer, max_tokens=max_tokens,
                                 eos_token_id=tokenizer.eos_token_id)
    return Example(exchange_id=exchange_id, kind=kind, input_ids=prompt + reply,
                   labels=[IGNORE_INDEX] * len(prompt) + reply)


def pair_from(exchange_id: str, turns, style, chosen: str, rejected: str, tokenizer,
              max_tokens: int) -> Example:
    """A preference pair: both replies after one prompt, the one that leaves room for both."""
    eos = tokenizer.eos_token_id
    prompt_c, reply_c = training_ids(turns, style, chosen, tokenizer, max_tokens, eos)
    prompt_r, reply_r = training_ids(turns, style, rejected, tokenizer, max_tokens, eos)
    # build_prompt drops the oldest turns to fit: the shorter prompt fits with either reply.
    prompt = min(prompt_c, prompt_r, key=len)
    return Example(exchange_id=exchange_id, kind="pair", input_ids=prompt + reply_c,
                   labels=[IGNORE_INDEX] * len(prompt) + reply_c,
                   rejected_ids=tuple(prompt + reply_r),
                   rejected_labels=tuple([IGNORE_INDEX] * len(prompt) + reply_r))


def split_point(exchange_id: str) -> float:
    """A stable number in [0, 1) for an exchange id: the split does not move between cycles."""
    digest = hashlib.sha256(exchange_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def asked_key(turns, style: str | None) -> str:
    """What the bot was asked (the dialogue and the style, spacing and case aside), as a key
    the split hashes: exchanges that asked the same share it."""
    asked = {"style": " ".join((style or "").split()).casefold(),
             "turns": [[t.role, " ".join(t.text.split()).casefold()] for t in turns]}
    return json.dumps(asked, ensure_ascii=False, sort_keys=True)


def validation_ids(exchange_ids: list[str], fraction: float,
                   keys: dict[str, str] | None = None) -> set[str]:
    """The exchanges held out for validation: those whose key's hash falls below `fraction`
    (`keys`: each exchange id's `asked_key`; the id itself where it has none).

    When the hash leaves one side empty although there are enough exchanges, the exchanges
    with the lowest hashes (at least one, at most all but one, whole questions where there are
    several) go to validation instead, so the choice is still deterministic.
    """
    points = {i: split_point(keys.get(i, i) if keys else i) for i in set(exchange_ids)}
    unique = sorted(points, key=lambda i: (points[i], i))
    chosen = {i for i in unique if points[i] < fraction}
    if len(unique) >= MIN_EXCHANGES_FOR_VALIDATION and (not chosen or len(chosen) == len(unique)):
        wanted = min(len(unique) - 1, max(1, round(fraction * len(unique))))
        cut = points[unique[wanted - 1]]
        chosen = {i for i in unique if points[i] <= cut}
        if len(chosen) == len(unique):  # one question asked every time: split its exchanges
            chosen = set(unique[:wanted])
    return chosen


def _held_out(rated: list[RatedExchange], example_ids: list[str], fraction: float,
              exam_ids: frozenset[str]) -> set[str]:
    """The validation side: whole questions (see the module), and every exchange that asked
    what a pinned exam exchange asked."""
    keys = {item.exchange.id: asked_key(item.exchange.turns(), item.exchange.style)
            for item in rated}
    pinned = {keys[i] for i in exam_ids if i in keys}
    return (validation_ids(example_ids, fraction, keys) | set(exam_ids)
            | {i for i in example_ids if keys.get(i) in pinned})


# (kind, text, rejected text for a pair). Newest correction first: a cap that cuts an exchange
# keeps its latest teaching.
def _signals(item: RatedExchange, stock: bool = False) -> list[tuple[Kind, str, str | None]]:
    """`stock`: the liked reply is an extra copy of a stock answer and gives no example."""
    reply = item.exchange.reply
    out: list[tuple[Kind, str, str | None]] = []
    for correction in reversed(item.corrections):
        out.append(("correction", correction.text, None))
        if correction.text.strip() != reply.strip():
            out.append(("pair", correction.text, reply))
    if item.score > 0 and not stock:
        out += [("reply", reply, None), ("desirable", reply, None)]
    elif item.score < 0:
        out.append(("undesirable", reply, None))
    return out


COUNT_OF: dict[str, str] = {"reply": "positives", "correction": "corrections", "pair": "pairs",
                            "desirable": "desirable", "undesirable": "undesirable"}


def stock_copies(rated: list[RatedExchange]) -> set[str]:
    """Ids of the exchanges whose liked reply is a copy of a stock answer: its near-identical
    group, or one of its long passages, already trains on the newest REPEATED_REPLY_TARGETS
    different prompts (near-identical prompts count as one, as in the trust policy; `rated` is
    newest first). A passage a taught or imported reply holds is the endorsed voice, not
    stock."""
    liked = [item for item in rated if item.score > 0 and item.exchange.adapter_version !=
             IMPORTED and not related(item.exchange.user_message, item.exchange.reply)]
    replies = clusters([item.exchange.reply for item in liked])
    prompts = clusters([item.exchange.user_message for item in liked])
    voiced = _endorsed_passages(rated)
    training: dict[object, set[int]] = {}  # reply group or passage -> its prompt groups
    copies = set()
    for item, reply, prompt in zip(liked, replies, prompts, strict=True):
        keys = [reply, *(p for p in passages(item.exchange.reply)
                         if len(p) == N_CHARS and p not in voiced)]
        if any(prompt not in training.get(key, ()) and
               len(training.get(key, ())) >= REPEATED_REPLY_TARGETS for key in keys):
            copies.add(item.exchange.id)
            continue
        for key in keys:
            training.setdefault(key, set()).add(prompt)
    return copies


def _endorsed_passages(rated: list[RatedExchange]) -> set[str]:
    """The long passages of every taught reply and imported pair."""
    texts = [c.text for item in rated for c in item.corrections]
    texts += [item.exchange.reply for item in rated if item.exchange.adapter_version == IMPORTED]
    return set().union(*(passages(text) for text in texts))


def build_dataset(rated: list[RatedExchange], tokenizer, *, max_tokens: int,
                  max_examples: int, val_fraction: float,
                  exam_ids: frozenset[str] = frozenset()) -> DataSet:
    """Examples from rated exchanges (newest first), from the newest `max_examples` exchanges
    that give any. Exchanges in `exam_ids` (pinned to the exam) are always held out."""
    examples: list[Example] = []
    counts = {"rated_exchanges": len(rated), "positives": 0, "corrections": 0, "pairs": 0,
              "desirable": 0, "undesirable": 0, "negatives_used": 0, "not_positive": 0,
              "too_long": 0, "capped": 0, "broken_text": 0, "repeated_reply": 0}
    stock = stock_copies(rated)
    counts["repeated_reply"] = len(stock)
    used = 0
    for item in rated:  # newest first, so the cap keeps the newest
        exchange = item.exchange
        counts["not_positive"] += item.score <= 0
        signals = _signals(item, exchange.id in stock)
        if signals and used >= max_examples:
            counts["capped"] += 1  # the cap counts exchanges: each gives its every signal
            continue
        used += bool(signals)
        negative_used = False
        for kind, text, rejected in signals:
            if kind != "undesirable" and BROKEN in text:
                counts["broken_text"] += 1  # never teach a broken character
                continue
            try:
                if kind == "pair":
                    example = pair_from(exchange.id, exchange.turns(), exchange.style, text,
                                        rejected, tokenizer, max_tokens)
                else:
                    example = example_from(exchange.id, kind, exchange.turns(), exchange.style,
                                           text, tokenizer, max_tokens)
            except PromptTooLong:
                counts["too_long"] += 1
                continue
            examples.append(example)
            counts[COUNT_OF[kind]] += 1
            negative_used |= item.score < 0 and kind in ("pair", "undesirable")
        counts["negatives_used"] += negative_used

    held_out = _held_out(rated, [e.exchange_id for e in examples], val_fraction, exam_ids)
    train = [e for e in examples if e.exchange_id not in held_out]
    validation = [e for e in examples if e.exchange_id in held_out]
    counts.update(train_examples=len(train), validation_examples=len(validation),
                  train_target_tokens=sum(e.target_tokens for e in targets(train)),
                  train_tokens=sum(len(e.input_ids) + len(e.rejected_ids or ())
                                   for e in train))
    log.info("data set: %d rated exchanges -> %d train / %d validation examples "
             "(%d positives, %d corrections, %d pairs, %d desirable, %d undesirable, "
             "%d too long, %d over the cap, %d with broken text, %d stock-answer copies)",
             len(rated), len(train), len(validation), counts["positives"],
             counts["corrections"], counts["pairs"], counts["desirable"],
             counts["undesirable"], counts["too_long"], counts["capped"],
             counts["broken_text"], counts["repeated_reply"])
    return DataSet(train=train, validation=validation, counts=counts,
                   held_out={i for i in held_out})
