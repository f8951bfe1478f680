"""The forgetting check's data: general text the project ships, in the bot's reply format.

Adapters trained on one server's exchanges can lose what the base model knew of ordinary text,
and the rated exchanges cannot show it. So the gate also measures the reply-format NLL on
`trainer/data/general_text.txt` (sentences written for the project, English and Chinese): each
sentence is the bot's reply to the sentence of its language before it, exactly as the bot
serves a turn. The
candidate's NLL there may exceed the base model's by at most GATE_FORGET_NATS; measured against
the base model, not the active adapter, so small losses cannot pile up cycle after cycle.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from bot.core.dialogue import PromptTooLong, Turn
from trainer.dataset import Example, example_from

GENERAL_EXAMPLES = 64  # enough for a stable mean, cheap beside the search
_HAN = re.compile(r"[\u4e00-\u9fff]")


@cache
def general_sentences() -> tuple[str, ...]:
    text = resources.files("trainer").joinpath("data/general_text.txt").read_text("utf-8")
    return tuple(line.strip() for line in text.splitlines()
                 if line.strip() and not line.startswith("#"))


def general_pairs() -> list[tuple[str, str]]:
    """(sentence, the next sentence of the same language), English and Chinese alternating."""
    sentences = general_sentences()
    by_language = [[s for s in sentences if not _HAN.search(s)],
                   [s for s in sentences if _HAN.search(s)]]
    pairs = [list(zip(group, group[1:], strict=False)) for group in by_language]
    mixed = [pair for duo in zip(*pairs, strict=False) for pair in duo]
    return mixed + pairs[0][len(pairs[1]):] + pairs[1][len(pairs[0]):]


def general_examples(tokenizer, max_tokens: int, limit: int = GENERAL_EXAMPLES) -> list[Example]:
    """Up to `limit` reply-format examples from `general_pairs`, taken evenly over them."""
    pairs = general_pairs()
    step = max(1, len(pairs) // limit)
    examples = []
    for index, (said, reply) in enumerate(pairs[::step][:limit]):
        try:
            examples.append(example_from(f"general-{index}", "reply", [Turn("user", said)], None,
                                         reply, tokenizer, max_tokens))
        except PromptTooLong:
            continue
    return examples
