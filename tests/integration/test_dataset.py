"""Rated exchanges to masked training examples: the serving format, the targets, the split."""

from __future__ import annotations

import pytest
from store_util import TENANT
from transformers import AutoTokenizer

from bot.dialogue import build_prompt
from bot.store import Exchange, TurnRecord
from trainer.dataset import IGNORE_INDEX, build_dataset, split_point, validation_ids


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


async def rated_exchange(store, reply: str, votes: list[int], *, user_message="how are you",
                         style=None, context=()) -> Exchange:
    exchange = await store.exchanges.add(Exchange(tenant=TENANT, user_message=user_message,
                                                  reply=reply, style=style,
                                                  context=list(context)))
    for moderator, vote in enumerate(votes):
        await store.exchanges.rate(exchange.id, f"mod{moderator}", vote)
    return exchange


def targets(examples, tokenizer) -> list[str]:
    return [tokenizer.decode([t for t in e.labels if t != IGNORE_INDEX]) for e in examples]


def build(rated, tokenizer, **overrides):
    options = {"max_tokens": 128, "max_examples": 100, "val_fraction": 0.2} | overrides
    return build_dataset(rated, tokenizer, **options)


async def test_mask_leaves_exactly_the_reply_and_eos(store, tokenizer, own):
    context = [TurnRecord(role="user", text="hello"), TurnRecord(role="bot", text="hi there")]
    exchange = await rated_exchange(store, "The sky is blue today.", [1],
                                    user_message="what colour is the sky?",
                                    style="Answer as a polite support agent:", context=context)
    data = build(await own.exchanges.rated(), tokenizer)
    (example,) = data.train + data.validation

    masked = [i for i, label in enumerate(example.labels) if label == IGNORE_INDEX]
    kept = [label for label in example.labels if label != IGNORE_INDEX]
    # The prompt is masked, the rest is the target, and the target is the input's tail.
    assert masked == list(range(len(masked)))
    assert kept == example.input_ids[len(masked):]
    assert tokenizer.decode(kept) == " The sky is blue today." + tokenizer.eos_token
    prompt = build_prompt(exchange.turns(), exchange.style, tokenizer, max_tokens=128)
    assert tokenizer.decode(example.input_ids[:len(masked)]) == prompt
    assert prompt.startswith("Answer as a polite support agent:\n<user> hello\n<bot> hi there")


async def test_negative_and_tied_replies_are_never_targets(store, tokenizer, own):
    await rated_exchange(store, "liked reply", [1, 1, -1])
    await rated_exchange(store, "disliked reply", [-1])
    await rated_exchange(store, "tied reply", [1, -1])
    corrected = await rated_exchange(store, "wrong reply", [-1, -1])
    await store.exchanges.correct(corrected.id, "mod7", "the corrected reply")
    await store.exchanges.correct(corrected.id, "mod8", "another better reply")

    data = build(await own.exchanges.rated(), tokenizer)
    texts = targets(data.train + data.validation, tokenizer)
    eos = tokenizer.eos_token
    assert sorted(texts) == sorted([f" liked reply{eos}", f" the corrected reply{eos}",
                                    f" another better reply{eos}"])
    assert data.counts["not_positive"] == 3
    assert data.counts["corrections"] == 2


def test_split_is_stable_and_ignores_other_exchanges():
    ids = [f"exchange-{i}" for i in range(200)]
    held_out = validation_ids(ids, 0.2)
    assert 20 < len(held_out) < 60  # about a fifth
    # Adding new exchanges does not move the old ones between train and validation.
    grown = validation_ids(ids + [f"new-{i}" for i in range(100)], 0.2)
    assert {i for i in grown if i in ids} == held_out
    assert held_out == {i for i in ids if split_point(i) < 0.2}


def test_small_data_still_gets_a_validation_example():
    # Five ids that the hash puts on the training side: the fallback must hold one out.
    ids = [i for i in (f"id-{n}" for n in range(100)) if split_point(i) >= 0.2][:5]
    held_out = validation_ids(ids, 0.2)
    assert len(held_out) == 1
    assert held_out == {min(ids, key=split_point)}
    assert validation_ids(ids, 0.2) == held_out  # deterministic
    # Too few exchanges to say anything: no fallback.
    assert validation_ids(ids[:2], 0.2) == set()


async def test_cap_keeps_the_newest_examples(store, tokenizer, own):
    for n in range(6):
        await rated_exchange(store, f"reply number {n}", [1])
    data = build(await own.exchanges.rated(), tokenizer, max_examples=4)
    kept = sorted(targets(data.train + data.validation, tokenizer))
    eos = tokenizer.eos_token
    assert kept == [f" reply number {n}{eos}" for n in (2, 3, 4, 5)]
    assert data.counts["capped"] == 2


async def test_long_dialogues_fit_the_token_budget(store, tokenizer, own):
    long_history = [TurnRecord(role="user" if n % 2 == 0 else "bot", text="word " * 40)
                    for n in range(10)]
    await rated_exchange(store, "short answer " * 30, [1], context=long_history)
    data = build(await own.exchanges.rated(), tokenizer, max_tokens=64)
    (example,) = data.train + data.validation
    assert len(example.input_ids) <= 64
    assert example.labels[-1] == tokenizer.eos_token_id
