"""Rated exchanges to training examples, in exactly the format the bot serves.

Targets: the bot's reply when the exchange's moderator score is positive, and every moderator
correction (one per moderator, the store keeps each moderator's newest) whatever the score.
A reply with a zero or negative score is never a target. Each example is the served prompt
(`bot.dialogue.training_ids`) followed by " " + target + end-of-text; the labels mask the
prompt with -100 so the loss counts the reply tokens only.

The train/validation split is decided per exchange by a hash of its id, so an exchange (and
every example made from it) stays on the same side from one cycle to the next.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Literal

from bot.dialogue import PromptTooLong, training_ids
from bot.store import RatedExchange

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value the loss skips (torch CrossEntropyLoss default)
# Below this many exchanges a validation set would be too small to say anything.
MIN_EXCHANGES_FOR_VALIDATION = 5


# What an example teaches. Targets: "reply" (a reply moderators rated up) and "correction" (a
# reply a moderator wrote). Objectives pick the kinds they train on, so preference kinds (pairs,
# undesirable replies) join here without changing the fit loop.
Kind = Literal["reply", "correction"]
TARGET_KINDS: tuple[Kind, ...] = ("reply", "correction")


@dataclass(frozen=True)
class Example:
    exchange_id: str
    kind: Kind
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX over the prompt, the target ids over the reply

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class DataSet:
    train: list[Example]
    validation: list[Example]
    counts: dict = field(default_factory=dict)


def example_from(exchange_id: str, kind: Kind, turns, style, target: str, tokenizer,
                 max_tokens: int) -> Example:
    prompt, reply = training_ids(turns, style, target, tokenizer, max_tokens=max_tokens,
                                 eos_token_id=tokenizer.eos_token_id)
    return Example(exchange_id=exchange_id, kind=kind, input_ids=prompt + reply,
                   labels=[IGNORE_INDEX] * len(prompt) + reply)


def split_point(exchange_id: str) -> float:
    """A stable number in [0, 1) for an exchange id: the split does not move between cycles."""
    digest = hashlib.sha256(exchange_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def validation_ids(exchange_ids: list[str], fraction: float) -> set[str]:
    """The exchanges held out for validation: those whose hash falls below `fraction`.

    When the hash leaves one side empty although there are enough exchanges, the exchanges
    with the lowest hashes (at least one, at most all but one) go to validation instead, so
    the choice is still deterministic.
    """
    unique = sorted(set(exchange_ids), key=split_point)
    chosen = {i for i in unique if split_point(i) < fraction}
    if len(unique) >= MIN_EXCHANGES_FOR_VALIDATION and (not chosen or len(chosen) == len(unique)):
        wanted = min(len(unique) - 1, max(1, round(fraction * len(unique))))
        chosen = set(unique[:wanted])
    return chosen


def build_dataset(rated: list[RatedExchange], tokenizer, *, max_tokens: int,
                  max_examples: int, val_fraction: float) -> DataSet:
    """Examples from rated exchanges (newest first), capped at the newest `max_examples`."""
    examples: list[Example] = []
    counts = {"rated_exchanges": len(rated), "positive_replies": 0, "corrections": 0,
              "not_positive": 0, "too_long": 0, "capped": 0}
    for item in rated:  # newest first, so the cap keeps the newest
        exchange = item.exchange
        targets: list[tuple[Kind, str]] = []
        # Newest correction first: a cap that cuts an exchange keeps its latest teaching.
        targets += [("correction", c.text) for c in reversed(item.corrections)]
        if item.score > 0:
            targets.append(("reply", exchange.reply))
        else:
            counts["not_positive"] += 1
        for kind, text in targets:
            if len(examples) >= max_examples:
                counts["capped"] += 1
                continue
            try:
                examples.append(example_from(exchange.id, kind, exchange.turns(),
                                             exchange.style, text, tokenizer, max_tokens))
            except PromptTooLong:
                counts["too_long"] += 1
                continue
            counts["positive_replies" if kind == "reply" else "corrections"] += 1

    held_out = validation_ids([e.exchange_id for e in examples], val_fraction)
    train = [e for e in examples if e.exchange_id not in held_out]
    validation = [e for e in examples if e.exchange_id in held_out]
    counts.update(train_examples=len(train), validation_examples=len(validation),
                  train_target_tokens=sum(e.target_tokens for e in train),
                  train_tokens=sum(len(e.input_ids) for e in train))
    log.info("data set: %d rated exchanges -> %d train / %d validation examples "
             "(%d corrections, %d not positive, %d too long, %d over the cap)",
             len(rated), len(train), len(validation), counts["corrections"],
             counts["not_positive"], counts["too_long"], counts["capped"])
    return DataSet(train=train, validation=validation, counts=counts)
