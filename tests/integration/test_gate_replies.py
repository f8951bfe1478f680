"""The gate on real greedy replies: a candidate whose NLL is lower but whose replies collapse is
refused by chrF; the numbers reach the report, the --json line and the mod-log post."""

from __future__ import annotations

import json

from store_util import TENANT

from bot.core.store import BASE_VERSION, AdapterEvent, Exchange
from bot.frontends.discord.modlog import modlog_text
from trainer import quality as quality_module
from trainer.candidate import measure_candidate, server_exam
from trainer.cycle import run_cycle
from trainer.dataset import build_dataset, example_from
from trainer.exam import ExamSource
from trainer.finalists import exam_judge
from trainer.fit import (
    FitConfig,
    FitParams,
    FitResult,
    FitRun,
    Keep,
    fit_lora,
    load_base_model,
    load_tokenizer,
)
from trainer.gate import MIN_REPLY_PROMPTS, GateRules, gate
from trainer.quality import GateConfig

SUBJECTS = ["order", "parcel", "refund", "password", "account", "invoice", "coupon", "address",
            "delivery", "payment", "subscription", "receipt"]
COLLAPSED = "A."
SPAM = "Buy cheap pills at example.com today!"


async def rate_support_pairs(store, count: int) -> None:
    """`count` distinct questions, each with a reply that names its subject, written by people
    (as imported pairs are: no model the gate compares wrote them) and liked by two moderators,
    so each is an endorsed exam reference (trainer/exam.py). Fixed exchange ids,
    so the split (a hash of the id) is the same in every run: at VAL_FRACTION 0.3, 12 of 40
    and 18 of 60 are held out, enough references for chrF to judge (random ids gave fewer
    than MIN_REPLY_PROMPTS about one run in five with 40)."""
    for n in range(count):
        subject = SUBJECTS[n % len(SUBJECTS)]
        exchange = await store.exchanges.add(Exchange(
            id=f"support-{n:03d}", tenant=TENANT,
            user_message=f"question {n}: what about my {subject}?",
            reply=f"your {subject} is fine, we will check the {subject} for you today",
            adapter_version="import"))
        await store.exchanges.rate(exchange.id, "moderator", 1)
        await store.exchanges.rate(exchange.id, "second moderator", 1)


def collapse_examples(data, rated, tokenizer, max_tokens):
    """Training examples that teach "A." twice as often as the real reply, per train prompt:
    the reply words get likelier (lower NLL) while greedy decoding says "A." and stops."""
    by_id = {item.exchange.id: item.exchange for item in rated}
    examples = []
    for example in data.train:
        exchange = by_id[example.exchange_id]
        for target in (COLLAPSED, COLLAPSED, exchange.reply):
            examples.append(example_from(exchange.id, "reply", exchange.turns(), None, target,
                                         tokenizer, max_tokens))
    return examples


def fit(base, examples, data, settings, tokenizer, epochs: int) -> bytes:
    params = FitParams(learning_rate=5e-3, batch_size=8, max_epochs=epochs, patience=epochs)
    return fit_lora(base, examples, data.validation, params, FitConfig.from_settings(settings),
                    pad_id=tokenizer.eos_token_id, run=FitRun(progress=False)).adapter


async def healthy_and_collapsed(settings, store, own):
    """On 60 rated support pairs: (settings, rated, tokenizer, data, base model, an adapter of
    one short epoch on the liked replies, one of eight epochs of "A." twice for each liked
    reply, which lowers the NLL of the replies below the first one's)."""
    settings = settings.model_copy(update={"max_new_tokens": 16, "val_fraction": 0.3,
                                           "lora_targets": "c_attn,c_proj,c_fc",
                                           "lora_rank": 16, "lora_alpha": 32})
    await rate_support_pairs(store, 60)
    rated = await own.exchanges.rated()
    tokenizer = load_tokenizer(settings.model_name)
    data = build_dataset(rated, tokenizer, max_tokens=settings.max_train_tokens,
                         max_examples=1000, val_fraction=settings.val_fraction)
    base = load_base_model(settings.model_name, "cpu")
    healthy = fit(base, data.train, data, settings, tokenizer, epochs=1)
    collapsed = fit(base, collapse_examples(data, rated, tokenizer, settings.max_train_tokens),
                    data, settings, tokenizer, epochs=8)
    return settings, rated, tokenizer, data, base, healthy, collapsed


async def test_lower_nll_but_collapsed_replies_is_refused_by_chrf(settings, store, own):
    # In service: the healthy adapter; the candidate: the collapsed one.
    settings, rated, tokenizer, data, base, active, collapsed = await healthy_and_collapsed(
        settings, store, own)

    notes: list[str] = []
    config = GateConfig.from_settings(settings)
    quality = measure_candidate(config, base, tokenizer,
                                server_exam(config, rated, ExamSource(), data, "v1"), data,
                                "v1", active, collapsed, notes)
    decision = gate(quality, GateRules.from_settings(settings))

    assert quality.prompts >= 10 and quality.active is not None and not notes
    # NLL alone would promote it: lower than the active adapter's (and the base model's)...
    assert quality.candidate.nll < quality.active.nll - settings.gate_margin, quality
    assert quality.candidate.nll < quality.base.nll - settings.gate_margin
    # ...while its greedy replies collapsed.
    assert all(sample["candidate"] == COLLAPSED for sample in quality.samples), quality.samples
    assert quality.candidate.chrf < quality.active.chrf - 10
    assert quality.vs_active.high < -settings.gate_chrf_margin
    # (The random tiny base model babbles one token over and over itself, so the check on
    # the candidate's own replies has no healthy yardstick here; chrF refuses it.)
    assert not decision.promote and decision.failed == "chrf", (decision, quality.replies)
    assert decision.reason.startswith("chrF") and "active adapter" in decision.reason


async def test_a_cycle_puts_every_gate_number_in_report_json_and_modlog(settings, store, own):
    settings = settings.model_copy(update={
        "search_trials": 2, "max_epochs": 6, "search_lr_min": 1e-2, "search_lr_max": 2e-2,
        "min_new_ratings": 0, "max_new_tokens": 16, "val_fraction": 0.3})
    await rate_support_pairs(store, 40)

    outcome = await run_cycle(settings, store, TENANT, progress=False)

    assert outcome.outcome == "promoted", outcome.reason
    gate_numbers = outcome.gate
    for key in ("prompts", "pairs", "nll_base", "chrf_base", "nll_candidate", "chrf_candidate",
                "preference_accuracy_candidate", "chrf_vs_base_mean", "chrf_vs_base_low",
                "chrf_vs_base_high", "failed"):
        assert key in gate_numbers, key
    assert gate_numbers["prompts"] >= MIN_REPLY_PROMPTS and gate_numbers["failed"] is None
    assert gate_numbers["chrf_candidate"] > gate_numbers["chrf_base"]
    assert gate_numbers["nll_candidate"] == round(outcome.val_loss["candidate"], 4)
    assert len(gate_numbers["samples"]) == 3 and gate_numbers["samples"][0]["reference"]

    line = json.loads(json.dumps(outcome.summary()))  # what `trainer once --json` prints
    assert line["gate"] == {k: v for k, v in gate_numbers.items() if k != "samples"}
    assert line["data"]["train_examples"] == outcome.data["train_examples"]

    report, _ = await own.registry.report(outcome.version)
    assert report["gate"]["chrf_candidate"] == gate_numbers["chrf_candidate"]
    post = modlog_text(AdapterEvent(kind="activated", version=outcome.version,
                                    previous=BASE_VERSION), report).splitlines()
    for key in ("prompts", "chrf_base", "chrf_candidate", "chrf_vs_base_low", "nll_candidate"):
        value = gate_numbers[key]
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        assert f"gate.{key}: {shown}" in post, (key, post)
    assert any(line.startswith("reason: candidate beats the base model") for line in post)


async def test_preference_accuracy_counts_validation_pairs_and_labels(settings, store, own):
    settings = settings.model_copy(update={
        "search_trials": 1, "max_epochs": 2, "search_lr_min": 5e-3, "search_lr_max": 2e-2,
        "min_new_ratings": 0, "max_new_tokens": 12, "val_fraction": 0.4})
    for n in range(30):
        subject = SUBJECTS[n % len(SUBJECTS)]
        exchange = await own.exchanges.add(Exchange(
            tenant=TENANT, user_message=f"question {n}: what about my {subject}?",
            reply="no idea" if n % 3 else f"your {subject} is fine"))
        await own.exchanges.rate(exchange.id, "moderator", -1 if n % 3 else 1)
        if n % 3 == 1:  # a 👎 with a taught reply: a pair
            await own.exchanges.correct(exchange.id, "moderator",
                                        f"we will check your {subject} today")

    outcome = await run_cycle(settings, store, TENANT, progress=False)

    numbers = outcome.gate
    assert numbers["pairs"] >= 1 and numbers["labels"] >= 1, numbers
    assert 0.0 <= numbers["preference_accuracy_candidate"] <= 1.0
    assert numbers["preference_accuracy_base"] is None  # the reference itself
    assert outcome.outcome in ("promoted", "rejected") and outcome.reason


async def test_a_thumbs_down_only_data_set_is_gated_without_references(settings, store, own):
    settings = settings.model_copy(update={
        "search_trials": 1, "max_epochs": 1, "min_new_ratings": 0, "max_new_tokens": 8})
    for n in range(20):
        exchange = await own.exchanges.add(Exchange(
            tenant=TENANT, user_message=f"question {n}", reply=f"a bad reply {n}"))
        await own.exchanges.rate(exchange.id, "moderator", -1)

    outcome = await run_cycle(settings, store, TENANT, progress=False)

    assert outcome.gate["prompts"] == 0 and outcome.gate["labels"] >= 1, outcome
    assert "chrf_vs_base_mean" not in outcome.gate
    if outcome.outcome == "promoted":
        assert outcome.reason.startswith("no exam references")
        assert "preference accuracy" in outcome.reason
    else:
        assert outcome.outcome == "rejected" and "no references to judge" in outcome.reason


def kept(adapter: bytes, loss: float, score: float) -> FitResult:
    """A search finalist as a trial leaves it: its kept epoch's adapter, loss and score."""
    return FitResult(adapter=adapter, kept_val_loss=loss, best_epoch=1, val_losses=[loss],
                     train_losses=[], steps_per_epoch=1, tokens_seen=0, seconds=0.0,
                     judged=[score], kept_score=score)


async def test_the_finalist_with_the_better_exam_replies_is_kept_over_a_lower_loss(
        settings, store, own):
    settings, rated, tokenizer, data, base, healthy, collapsed = await healthy_and_collapsed(
        settings, store, own)
    config = GateConfig.from_settings(settings)
    refs = server_exam(config, rated, ExamSource(), data, BASE_VERSION)
    judge = exam_judge(base, tokenizer, refs, config, MIN_REPLY_PROMPTS)

    assert judge(healthy) > judge(collapsed)
    # The search lists its finalists lowest loss first: the collapsed one.
    index, note = judge.pick([kept(collapsed, 1.0, judge(collapsed)),
                              kept(healthy, 2.0, judge(healthy))])
    assert index == 1, note
    assert "kept trial 2 of 2 (lowest validation loss first)" in note
    assert f"on {len(refs)} prompts" in note
    # A tie keeps the lower loss.
    assert judge.pick([kept(healthy, 1.0, 5.0), kept(collapsed, 2.0, 5.0)])[0] == 0
    # The preference epochs' adapter gives way only to replies better beyond noise.
    assert "replies better" in judge.worse(collapsed, healthy)
    assert judge.worse(healthy, healthy) is None
    assert exam_judge(base, tokenizer, refs[:MIN_REPLY_PROMPTS - 1], config,
                      MIN_REPLY_PROMPTS) is None  # too few prompts: the loss decides


async def test_the_gate_reuses_the_judges_exam_answers_and_measures_the_same(
        settings, store, own, monkeypatch):
    settings, rated, tokenizer, data, base, healthy, collapsed = await healthy_and_collapsed(
        settings, store, own)
    config = GateConfig.from_settings(settings)
    refs = server_exam(config, rated, ExamSource(), data, "v1")
    judge = exam_judge(base, tokenizer, refs, config, MIN_REPLY_PROMPTS)
    judge(collapsed)  # the search judged the candidate's epoch (and so the base model)
    alone = measure_candidate(config, base, tokenizer, refs, data, "v1", healthy, collapsed, [])

    asked = []
    answer = quality_module.exam_answers
    monkeypatch.setattr(quality_module, "exam_answers",
                        lambda model, *rest: asked.append(model) or answer(model, *rest))
    shared = measure_candidate(config, base, tokenizer, refs, data, "v1", healthy, collapsed,
                               [], judge)

    assert len(asked) == 1 and asked[0] is not base  # only the active adapter answered again
    assert judge.answered(healthy) is None
    assert shared.replies == alone.replies and shared.samples == alone.samples
    assert shared.candidate == alone.candidate and shared.base == alone.base
    assert shared.vs_active == alone.vs_active and shared.vs_base == alone.vs_base


async def test_an_epoch_with_degenerate_exam_replies_ranks_below_every_healthy_one(
        settings, store, own):
    settings, rated, tokenizer, data, base, healthy, _ = await healthy_and_collapsed(
        settings, store, own)
    by_id = {item.exchange.id: item.exchange for item in rated}
    spam = [example_from(e.exchange_id, "reply", by_id[e.exchange_id].turns(), None, SPAM,
                         tokenizer, settings.max_train_tokens) for e in data.train]
    params = FitParams(learning_rate=5e-3, batch_size=8, max_epochs=8, patience=8)
    spammer = fit_lora(base, spam, data.validation, params, FitConfig.from_settings(settings),
                       pad_id=tokenizer.eos_token_id, keep=Keep.LAST_EPOCH,
                       run=FitRun(progress=False)).adapter
    config = GateConfig.from_settings(settings)
    judge = exam_judge(base, tokenizer, server_exam(config, rated, ExamSource(), data,
                                                    BASE_VERSION), config, MIN_REPLY_PROMPTS)

    assert judge.degenerate(healthy) is None
    assert "link" in judge.degenerate(spammer)
    assert judge(spammer) < 0 <= judge(healthy)  # whatever its chrF, below every healthy one
    # Preference epochs that left the replies degenerate give way to the search's winner.
    assert "degenerate" in judge.worse(spammer, healthy)
