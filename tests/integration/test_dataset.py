"""Rated exchanges to masked training examples: the serving format, the targets, the split."""

from __future__ import annotations

from store_util import TENANT

from bot.core.dialogue import build_prompt
from bot.core.store import Exchange, TurnRecord
from trainer.dataset import (
    IGNORE_INDEX,
    asked_key,
    build_dataset,
    labels,
    pairs,
    split_point,
    validation_ids,
)
from trainer.dataset import targets as sft_targets


async def rated_exchange(store, reply: str, votes: list[int], *, user_message="how are you",
                         style=None, context=()) -> Exchange:
    exchange = await store.exchanges.add(Exchange(tenant=TENANT, user_message=user_message,
                                                  reply=reply, style=style,
                                                  context=list(context)))
    for moderator, vote in enumerate(votes):
        await store.exchanges.rate(exchange.id, f"mod{moderator}", vote)
    return exchange


def targets(examples, tokenizer) -> list[str]:
    """The decoded SFT targets among `examples`."""
    return [tokenizer.decode([t for t in e.labels if t != IGNORE_INDEX])
            for e in sft_targets(examples)]


def build(rated, tokenizer, **overrides):
    options = {"max_tokens": 128, "max_examples": 100, "val_fraction": 0.2} | overrides
    return build_dataset(rated, tokenizer, **options)


async def test_mask_leaves_exactly_the_reply_and_eos(store, tokenizer, own):
    context = [TurnRecord(role="user", text="hello"), TurnRecord(role="bot", text="hi there")]
    exchange = await rated_exchange(store, "The sky is blue today.", [1],
                                    user_message="what colour is the sky?",
                                    style="Answer as a polite support agent:", context=context)
    data = build(await own.exchanges.rated(), tokenizer)
    (example,) = sft_targets(data.train + data.validation)

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


async def test_a_question_asked_again_is_on_one_side_of_the_split(store, tokenizer, own):
    """A question asked and taught in several exchanges never trains a candidate on the
    reference the exam holds for it (spacing and case do not make another question)."""
    asked = {}
    for n in range(30):
        for variant in (f"question {n}", f"  Question {n} ", f"QUESTION  {n}"):
            exchange = await rated_exchange(store, "a bad reply", [-1], user_message=variant)
            await store.exchanges.correct(exchange.id, "mod0", f"answer {n}")
            asked[exchange.id] = n
    data = build(await own.exchanges.rated(), tokenizer)

    held = {asked[e.exchange_id] for e in data.validation}
    trained = {asked[e.exchange_id] for e in data.train}
    assert held and trained and not held & trained
    assert len(data.held_out) == 3 * len(held)


async def test_every_exchange_that_asked_a_pinned_question_is_held_out(store, tokenizer, own):
    first = [await rated_exchange(store, f"reply {n}", [1], user_message=f"question {n}")
             for n in range(10)]
    pinned = first[0]
    again = await rated_exchange(store, "reply again", [1], user_message=pinned.user_message)
    data = build(await own.exchanges.rated(), tokenizer, exam_ids=frozenset({pinned.id}))

    assert {pinned.id, again.id} <= data.held_out
    assert again.id not in {e.exchange_id for e in data.train}


def test_the_fallback_holds_out_whole_questions():
    # Ten exchanges of four questions whose hashes all land on the training side.
    questions = [q for q in (asked_key([], f"q{n}") for n in range(100))
                 if split_point(q) >= 0.2][:4]
    keys = {f"ex-{n}": questions[n % 4] for n in range(10)}  # 2 or 3 exchanges each
    held_out = validation_ids(list(keys), 0.2, keys)

    # A fifth of ten is two exchanges: the lowest-hashed question, all of it.
    first = min(questions, key=split_point)
    assert held_out == {i for i, q in keys.items() if q == first}
    # One question asked every time: its exchanges are split as before.
    same = {f"ex-{n}": questions[0] for n in range(10)}
    assert len(validation_ids(list(same), 0.2, same)) == 2


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
    (example,) = sft_targets(data.train + data.validation)
    assert len(example.input_ids) <= 64
    assert example.labels[-1] == tokenizer.eos_token_id


def decoded(ids, labels, tokenizer) -> str:
    return tokenizer.decode([t for t, label in zip(ids, labels, strict=True)
                             if label != IGNORE_INDEX])


async def test_every_signal_becomes_data(store, tokenizer, own):
    liked = await rated_exchange(store, "glad to help", [1, 1, -1], user_message="thanks")
    disliked = await rated_exchange(store, "go away", [-1], user_message="help me")
    await rated_exchange(store, "meh", [1, -1], user_message="tied")  # score 0: no signal
    corrected = await rated_exchange(store, "it is green", [-1, -1],
                                     user_message="what colour is the sky?",
                                     context=[TurnRecord(role="user", text="hello")])
    await store.exchanges.correct(corrected.id, "mod7", "it is blue")
    await store.exchanges.correct(corrected.id, "mod8", "the sky is blue")

    data = build(await own.exchanges.rated(), tokenizer)
    examples = data.train + data.validation
    eos = tokenizer.eos_token
    by_kind = {}
    for e in examples:
        by_kind.setdefault(e.kind, []).append((e.exchange_id,
                                               decoded(e.input_ids, e.labels, tokenizer)))
    assert sorted(by_kind["reply"]) == [(liked.id, f" glad to help{eos}")]
    assert sorted(by_kind["desirable"]) == [(liked.id, f" glad to help{eos}")]
    assert sorted(by_kind["undesirable"]) == sorted([(disliked.id, f" go away{eos}"),
                                                     (corrected.id, f" it is green{eos}")])
    assert sorted(by_kind["correction"]) == sorted([(corrected.id, f" it is blue{eos}"),
                                                    (corrected.id, f" the sky is blue{eos}")])
    # A pair per correction: chosen = the taught reply, rejected = the bot's, one prompt.
    pair_examples = pairs(examples)
    assert sorted(decoded(p.input_ids, p.labels, tokenizer) for p in pair_examples) == \
        sorted([f" it is blue{eos}", f" the sky is blue{eos}"])
    prompt = build_prompt(corrected.turns(), corrected.style, tokenizer, max_tokens=128)
    for p in pair_examples:
        assert p.exchange_id == corrected.id
        assert decoded(p.rejected_ids, p.rejected_labels, tokenizer) == f" it is green{eos}"
        cut = p.labels.index(next(x for x in p.labels if x != IGNORE_INDEX))
        assert tokenizer.decode(p.input_ids[:cut]) == prompt
        assert list(p.rejected_ids[:cut]) == p.input_ids[:cut]
        assert all(x == IGNORE_INDEX for x in p.rejected_labels[:cut])
    assert {k: data.counts[k] for k in ("positives", "corrections", "pairs", "desirable",
                                        "undesirable", "negatives_used", "rated_exchanges")} \
        == {"positives": 1, "corrections": 2, "pairs": 2, "desirable": 1, "undesirable": 2,
            "negatives_used": 2, "rated_exchanges": 4}
    assert len(targets(examples, tokenizer)) == 3
    assert len(labels(examples)) == 3
    # The split is by exchange: every example of an exchange sits on one side.
    assert data.held_out == {e.exchange_id for e in data.validation}
    assert not data.held_out & {e.exchange_id for e in data.train}


async def test_broken_characters_are_never_taught(store, tokenizer, own):
    broken = await rated_exchange(store, "caf\ufffd is open", [1], user_message="open?")
    corrected = await rated_exchange(store, "no\ufffd", [-1], user_message="price?")
    await store.exchanges.correct(corrected.id, "mod1", "ten \ufffd dollars")
    await store.exchanges.correct(corrected.id, "mod2", "ten dollars")

    data = build(await own.exchanges.rated(), tokenizer)
    examples = data.train + data.validation
    taught = [decoded(e.input_ids, e.labels, tokenizer) for e in examples
              if e.kind != "undesirable"]
    assert taught and not any("\ufffd" in text for text in taught)
    # Dropped: the 👍 reply as target and as desirable label, the broken correction and its pair.
    assert data.counts["broken_text"] == 4
    assert data.counts["corrections"] == 1 and data.counts["pairs"] == 1
    # A broken 👎 reply may still be pushed down (it is never a target).
    assert {e.exchange_id for e in examples if e.kind == "undesirable"} == {corrected.id}
    assert broken.id not in {e.exchange_id for e in examples}


async def test_a_thumbs_down_only_data_set_has_data(store, tokenizer, own):
    for n in range(6):
        await rated_exchange(store, f"bad reply {n}", [-1], user_message=f"question {n}")
    data = build(await own.exchanges.rated(), tokenizer)
    assert data.train and data.validation
    assert {e.kind for e in data.train + data.validation} == {"undesirable"}
    assert data.counts["undesirable"] == 6 and data.counts["negatives_used"] == 6
    assert data.counts["positives"] == 0 and data.counts["pairs"] == 0


async def test_a_liked_stock_answer_trains_twice_not_on_every_prompt(store, tokenizer, own):
    stock = "What is the sea and quiet?"
    unrelated = ["I have to work this weekend.", "Going to the beach tomorrow!",
                 "我刚养了一只小狗！", "Spicy food is the best.", "I can't decide what to wear."]
    for prompt in unrelated:  # oldest first: the store lists the newest first
        await rated_exchange(store, stock.upper() if "beach" in prompt else stock, [1],
                             user_message=prompt)
    answer = "Our support team answers from nine to six on weekdays."
    for prompt in ["When does your support team answer?", "Is the support team there today?",
                   "Which hours does support answer?"]:  # the same answer on its topic
        await rated_exchange(store, answer, [1], user_message=prompt)

    rated = await own.exchanges.rated()
    data = build(rated, tokenizer, val_fraction=0.0)
    replies = targets(data.train + data.validation, tokenizer)
    end = tokenizer.eos_token
    assert sorted(replies).count(f" {stock}{end}") + replies.count(f" {stock.upper()}{end}") == 2
    assert replies.count(f" {answer}{end}") == 3
    assert data.counts["repeated_reply"] == 3
    newest_stock = [item.exchange.id for item in rated if item.exchange.reply.casefold() ==
                    stock.casefold()][:2]
    assert {e.exchange_id for e in data.train + data.validation if e.kind == "reply"} >= set(
        newest_stock)
    assert sum(e.kind == "desirable" for e in data.train + data.validation) == 5


async def test_imported_pairs_are_never_stock_answers(store, tokenizer, own):
    for prompt in ["I have to work this weekend.", "Going to the beach tomorrow!",
                   "我刚养了一只小狗！", "Spicy food is the best."]:
        exchange = await store.exchanges.add(Exchange(
            tenant=TENANT, user_message=prompt, reply="Nice to hear from you!",
            adapter_version="import"))
        await store.exchanges.rate(exchange.id, "import", 1)
    data = build(await own.exchanges.rated(), tokenizer, val_fraction=0.0)
    assert data.counts["repeated_reply"] == 0 and data.counts["positives"] == 4


async def test_a_passage_liked_across_unrelated_prompts_trains_twice_unless_taught(
        store, tokenizer, own):
    # Different replies that share one long passage (what the gate's degeneracy check counts):
    # a phrase the small model learned to say everywhere.
    phrase = "what is the sea and quiet inside"
    prompts = ["I have to work this weekend.", "Going to the beach tomorrow!",
               "Spicy food is the best.", "I can't decide what to wear.", "My cat is asleep."]
    around = [("Honestly, after a long day at the office,", "my friend told me so."),
              ("Yesterday morning we wondered", "while the rain kept falling hard."),
              ("Grandma always asked", "before baking her famous apple pies."),
              ("Nobody at the party could explain", "so we played board games instead."),
              ("The teacher wrote on the board:", "and the pupils laughed out loud.")]
    for (opener, closer), prompt in zip(around, prompts, strict=True):
        await rated_exchange(store, f"{opener} {phrase} {closer}", [1], user_message=prompt)
    data = build(await own.exchanges.rated(), tokenizer, val_fraction=0.0)
    assert data.counts["repeated_reply"] == 3 and data.counts["positives"] == 2

    # The same passage in a reply a moderator taught is the endorsed voice: every copy trains.
    taught = await rated_exchange(store, "no", [-1], user_message="Tell me about the sea.")
    await store.exchanges.correct(taught.id, "mod0", f"The sea: {phrase} the bay at night.")
    data = build(await own.exchanges.rated(), tokenizer, val_fraction=0.0)
    assert data.counts["repeated_reply"] == 0 and data.counts["positives"] == 5
