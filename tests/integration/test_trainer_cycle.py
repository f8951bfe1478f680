"""Whole training cycles on the tiny model and a real Redis: promote, gate, lock, threshold."""

from __future__ import annotations

import asyncio
import io
import json
import math

import pytest
import redis.asyncio as aioredis
import torch
from store_util import TENANT, raw_redis
from transformers import AutoModelForCausalLM

from bot.core.adapter_io import attach_adapter, parse_adapter
from bot.core.store import BASE_VERSION, AdapterRecord, Exchange, Store
from trainer.cycle import LOCK_HELD, TrainingLock, run_cycle, warm_start
from trainer.publish import PublishRefused, publish
from trainer.schedule import CANARY_CHECK_SECONDS, TrainerService, build_scheduler

QA = [("what is the capital of france", "paris is the capital of france"),
      ("how are you", "i am fine thank you"),
      ("what color is the sky", "the sky is blue"),
      ("say hello", "hello there"),
      ("what is two plus two", "two plus two is four")]


# For tests about locks, requests and the schedule, not the replies: after one epoch the random
# tiny model's greedy replies to a handful of validation prompts are babble either way, so the
# gate decides on NLL alone (GATE_MAX_PROMPTS=0), as it did when these tests were written.
NLL_GATE = {"gate_max_prompts": 0}


def train_settings(settings, **overrides):
    """Few trials and epochs, a learning-rate range where the tiny model learns surely, and
    gate replies about as long as the answers (a reply running on to 64 tokens of babble)."""
    options = {"search_trials": 2, "max_epochs": 2, "search_lr_min": 5e-3,
               "search_lr_max": 2e-2, "min_new_ratings": 0, "max_new_tokens": 12}
    return settings.model_copy(update=options | overrides)


async def add_rated(store, count: int, vote: int = 1) -> list[Exchange]:
    """`count` exchanges with simple repeated question -> answer pairs, each rated `vote`."""
    added = []
    for n in range(count):
        question, answer = QA[n % len(QA)]
        exchange = await store.exchanges.add(Exchange(tenant=TENANT,
                                                      user_message=f"{question} ({n})",
                                                      reply=answer))
        await store.exchanges.rate(exchange.id, "moderator", vote)
        added.append(exchange)
    return added


async def promote_v1(settings, store, own):
    """A first cycle on 40 👍 and 5 👎 exchanges: (its settings, its outcome, the newest rating
    event before it)."""
    # The publish path on NLL and preference accuracy, without the replies' chrF: the random
    # tiny model's greedy replies to these five questions can stay babble even after six
    # epochs (test_gate_replies.py has the gate on replies, with answers the tiny model
    # learns). Five epochs, all of them run: the exchange ids, hence the split, are new each
    # run, and with fewer (or stopping when one epoch's validation loss rose) some splits left
    # the candidate too close to the base for a fall beyond noise. One trial, so a second cycle
    # (whose first trial repeats v1's hyperparameters, with the same pinned seed and the same
    # data) trains v1 again.
    settings = train_settings(settings, max_epochs=5, early_stop_patience=5, search_trials=1,
                              **NLL_GATE)
    await add_rated(store, 40)
    await add_rated(store, 5, vote=-1)
    newest_event = (await own.trainer.snapshot()).newest_event
    outcome = await run_cycle(settings, store, TENANT, progress=False)
    assert outcome.outcome == "promoted", outcome.reason
    return settings, outcome, newest_event


async def test_a_cycle_promotes_a_candidate_better_than_the_base(settings, store, own):
    settings, outcome, newest_event = await promote_v1(settings, store, own)

    assert outcome.outcome == "promoted", outcome.reason
    assert outcome.version == "v1"
    assert outcome.val_loss["candidate"] < outcome.val_loss["base"] - 0.05, (
        outcome.learning_rate, outcome.batch_size, outcome.data)
    assert outcome.val_loss["active"] == outcome.val_loss["base"]  # the base was serving
    assert outcome.trials == 1 and outcome.batch_size in (4, 8, 16, 32)
    assert await own.registry.active() == "v1"
    assert (await own.trainer.snapshot()).cursor == newest_event
    (run,) = await own.trainer.recent_runs(1)
    assert run["outcome"] == "promoted" and run["version"] == "v1"


async def test_a_promoted_adapter_records_its_parent_hyperparameters_data_and_metrics(
        settings, store, own):
    settings, outcome, _ = await promote_v1(settings, store, own)

    record = await store.registry.record("v1")
    assert record.parent == BASE_VERSION and record.base_model == settings.model_name
    assert record.hyperparameters["learning_rate"] == outcome.learning_rate
    assert record.hyperparameters["batch_size"] == outcome.batch_size
    assert record.hyperparameters["lora_rank"] == settings.lora_rank
    assert [t["state"] for t in record.trials] == ["COMPLETE"]
    assert record.data["positives"] == 40 and record.data["not_positive"] == 5
    # Each 👍 reply is an SFT target and a desirable label, each 👎 reply an undesirable one.
    assert record.data["desirable"] == 40 and record.data["undesirable"] == 5
    assert record.data["train_examples"] + record.data["validation_examples"] == 85
    assert record.metrics["val_loss"] == outcome.val_loss
    assert len(record.metrics["train_loss_curve"]) >= 2


async def test_a_promoted_adapters_report_is_in_the_registry_and_in_named_files(settings, store,
                                                                                 own):
    settings, outcome, _ = await promote_v1(settings, store, own)

    report, png = await store.registry.report("v1")
    assert report["version"] == "v1" and report["val_loss"] == outcome.val_loss
    assert png.startswith(b"\x89PNG")
    # Report files carry the key prefix: two bots sharing a reports folder keep theirs apart.
    named = settings.reports_dir / f"{settings.key_prefix}-v1"
    assert outcome.png_path == str(named.with_suffix(".png"))
    assert named.with_suffix(".png").read_bytes() == png
    assert json.loads(named.with_suffix(".json").read_text())["version"] == "v1"


async def test_a_promoted_adapters_bytes_load_into_a_fresh_base_model(settings, store, own):
    settings, _, _ = await promote_v1(settings, store, own)

    model = AutoModelForCausalLM.from_pretrained(settings.model_name)
    model = attach_adapter(model, parse_adapter(await store.registry.blob("v1")), "v1")
    assert any(".lora_B.v1." in name and param.abs().sum() > 0
               for name, param in model.named_parameters())


async def test_a_second_cycle_no_better_than_the_active_adapter_is_rejected(settings, store,
                                                                            own):
    settings, outcome, _ = await promote_v1(settings, store, own)

    # A second cycle on the same data repeats v1's hyperparameters and seed, so its candidate
    # is v1 again. Without exam prompts (GATE_MAX_PROMPTS=0) its replies cannot be told from
    # v1's, and a loss or preference number alone never replaces what serves: rejected, and
    # nothing in service changes. (test_gate_replies.py has the gate on replies.)
    strict = train_settings(settings, gate_margin=5.0, max_epochs=5, early_stop_patience=5,
                            search_trials=1, **NLL_GATE)
    second = await run_cycle(strict, store, TENANT, force=True, progress=False)
    assert second.val_loss["candidate"] == pytest.approx(outcome.val_loss["candidate"], rel=1e-4)
    assert second.outcome == "rejected", second.reason
    assert "cannot tell the candidate's replies from the active adapter's" in second.reason
    assert second.val_loss["active"] == pytest.approx(outcome.val_loss["candidate"], rel=1e-4)
    assert second.trial_details[0]["params"] == {"learning_rate": outcome.learning_rate,
                                                 "batch_size": outcome.batch_size}
    assert await own.registry.active() == "v1"
    assert [r.version for r in await own.registry.records()] == ["v1"]
    assert (await own.trainer.recent_runs(1))[0]["outcome"] == "rejected"
    assert second.png_path and second.png_path.endswith(".png")


async def test_two_cycles_started_at_once_train_once(settings, store, redis_server, own):
    # Three epochs: with one, 1 split in 40 left the candidate's NLL above the base's (60 runs
    # with three all promoted, the NLL lower by 0.12 nats or more).
    settings = train_settings(settings, search_trials=1, max_epochs=3, **NLL_GATE)
    await add_rated(store, 20)
    other = Store(aioredis.from_url(redis_server.url), prefix=settings.key_prefix,
                  user_secret=settings.user_hash_secret.get_secret_value())
    try:
        first, second = await asyncio.gather(
            run_cycle(settings, store, TENANT, progress=False),
            run_cycle(settings, other, TENANT, progress=False))
    finally:
        await other.close()
    outcomes = sorted([first.outcome, second.outcome])
    assert outcomes == ["promoted", "skipped"], (first.reason, second.reason)
    skipped = first if first.outcome == "skipped" else second
    assert skipped.reason == LOCK_HELD
    assert [r.version for r in await own.registry.records()] == ["v1"]
    # The lock was released: the next cycle is free to run (and finds nothing new).
    third = await run_cycle(train_settings(settings, min_new_ratings=1), store, TENANT,
                            progress=False)
    assert third.outcome == "skipped" and third.reason.startswith("0 new rating")


async def test_skip_threshold_and_train_now_request(settings, store, own):
    settings = train_settings(settings, min_new_ratings=25, search_trials=1, max_epochs=1,
                              **NLL_GATE)
    await add_rated(store, 20)

    skipped = await run_cycle(settings, store, TENANT, progress=False)
    assert skipped.outcome == "skipped"
    assert skipped.reason.startswith("20 new rating(s)") and "MIN_NEW_RATINGS=25" in skipped.reason
    # a skipped cycle leaves the ratings counted
    assert (await own.trainer.snapshot()).cursor == "0-0"
    assert await own.registry.records() == []

    await own.trainer.request_training("admin")
    requested = await run_cycle(settings, store, TENANT, progress=False)
    assert requested.outcome != "skipped", requested.reason
    assert await own.trainer.take_request() is None  # the request was used up
    assert (await own.trainer.snapshot()).cursor == (await own.trainer.snapshot()).newest_event

    await add_rated(store, 5)  # five new, still below 25
    assert (await run_cycle(settings, store, TENANT, progress=False)).reason.startswith("5 new")


async def test_no_usable_data_changes_nothing(settings, store, own):
    # Ratings that cancel out (score 0) give no signal; a 👎-only data set does (it trains).
    for exchange in await add_rated(store, 10, vote=-1):
        await store.exchanges.rate(exchange.id, "another moderator", 1)
    outcome = await run_cycle(train_settings(settings), store, TENANT, progress=False)
    assert outcome.outcome == "skipped" and outcome.reason.startswith("no usable data")
    assert await own.registry.active() == BASE_VERSION
    assert await own.registry.records() == []


async def test_nan_loss_fails_every_trial_and_publishes_nothing(settings, store, tmp_path, own):
    broken = tmp_path / "nan-gpt2"
    model = AutoModelForCausalLM.from_pretrained(settings.model_name)
    with torch.no_grad():
        model.transformer.wte.weight[0, 0] = math.nan  # real weights that poison every loss
    model.save_pretrained(broken)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        source = settings.model_name + "/" + name
        (broken / name).write_bytes(open(source, "rb").read())
    await add_rated(store, 20)

    outcome = await run_cycle(train_settings(settings, model_name=str(broken)), store, TENANT,
                              progress=False)
    assert outcome.outcome == "rejected"
    assert outcome.reason.startswith("every trial failed")
    assert "loss became nan" in outcome.reason
    assert [t["state"] for t in outcome.trial_details] == ["FAIL", "FAIL"]
    assert await own.registry.active() == BASE_VERSION
    assert await own.registry.records() == []


async def test_schedule_runs_a_requested_cycle_soon(settings, store, own):
    # Three epochs: one left the candidate no better than the base on some random splits (the
    # exchange ids, hence the split, are new each run); this test is about the schedule.
    settings = train_settings(settings, search_trials=1, max_epochs=3, min_new_ratings=1000,
                              **NLL_GATE)
    service = TrainerService(settings, store)
    scheduler = build_scheduler(service, settings)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"training-cycle", "train-now-poll", "canary-judge"}
    assert jobs["canary-judge"].trigger.interval.total_seconds() == CANARY_CHECK_SECONDS
    for job in jobs.values():
        assert job.max_instances == 1 and job.coalesce is True
    assert jobs["training-cycle"].trigger.interval.total_seconds() == \
        settings.train_interval_minutes * 60

    await add_rated(store, 20)
    assert await service.poll_request() == []  # nothing asked: no cycle, no record
    assert await own.trainer.recent_runs() == []
    await own.trainer.request_training("admin")
    [outcome] = await service.poll_request()
    assert outcome.outcome == "promoted" and outcome.guild == TENANT, outcome
    assert not await own.trainer.training_requested()


def test_loss_curve_png_is_a_picture():
    from PIL import Image

    from trainer.report import loss_curve_png

    png = loss_curve_png("test", [3.0, 2.5, 2.0, 1.8], 2, [2.6, 1.9], {"base": 3.1,
                                                                       "active": None})
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (700, 400)


async def test_publish_never_overwrites_a_change_made_meanwhile(store, own):
    # While a candidate trained from "base", an admin activated another version.
    other = await own.registry.save(AdapterRecord(base_model="m"), b"other adapter")
    await own.registry.activate(other.version)
    with pytest.raises(PublishRefused) as refused:
        await publish(own.registry, AdapterRecord(parent=BASE_VERSION, base_model="m"),
                      b"candidate", {"outcome": "promoted"}, None)
    assert await own.registry.active() == other.version
    assert refused.value.version != other.version  # saved for the record, never activated
    report, _ = await store.registry.report(refused.value.version)
    assert report["version"] == refused.value.version


async def test_a_lost_lock_is_noticed(store, own):
    lock = TrainingLock(own, ttl=5)
    assert await lock.acquire()
    assert await lock.still_held()
    assert not await TrainingLock(own, ttl=5).acquire()  # a second trainer is kept out
    await raw_redis(store).delete(store.keys("g", TENANT, "tr", "lock"))  # it expired meanwhile...
    assert await TrainingLock(own, ttl=5).acquire()  # ...and another trainer took it
    assert not await lock.still_held() and lock.lost
    await lock.release()  # releasing does not free the other trainer's lock
    assert await raw_redis(store).exists(store.keys("g", TENANT, "tr", "lock"))


async def test_an_empty_store_is_skipped(settings, store):
    outcome = await run_cycle(train_settings(settings), store, TENANT, force=True,
                              progress=False)
    assert outcome.outcome == "skipped" and outcome.reason.startswith("no usable data")


async def test_search_warm_starts_from_the_adapter_in_service(store, own):
    """Not from the newest registry entry: a refused candidate or a rolled-back adapter is
    neither what serves nor what was last promoted."""
    assert await warm_start(own.registry) is None  # nothing promoted yet: a fresh search
    serving = await own.registry.save(
        AdapterRecord(base_model="m", hyperparameters={"learning_rate": 1e-3, "batch_size": 8}),
        b"serving")
    await own.registry.activate(serving.version)
    await own.registry.save(  # a candidate the gate (or a publish race) refused
        AdapterRecord(base_model="m", hyperparameters={"learning_rate": 3e-3, "batch_size": 4}),
        b"refused")
    assert (await warm_start(own.registry))["learning_rate"] == 1e-3

    newer = await own.registry.save(
        AdapterRecord(base_model="m", hyperparameters={"learning_rate": 2e-4, "batch_size": 16}),
        b"newer")
    await own.registry.activate(newer.version)
    await own.registry.rollback()  # back to `serving`; `newer` is still the newest entry
    assert (await warm_start(own.registry))["learning_rate"] == 1e-3
    await own.registry.activate(BASE_VERSION)  # the base serves: the last adapter before it
    assert (await warm_start(own.registry))["learning_rate"] == 1e-3


async def test_the_schedule_trains_each_due_server_and_only_those(settings, store):
    """Server 1 has enough new ratings, server 2 asked for training, server 3 neither."""
    # Two epochs: the gate wants the NLL lower by GATE_MARGIN now that a preference-accuracy
    # "win" over a handful of pairs no longer counts, and one epoch on server 2's ten
    # exchanges fell short of that in one loaded run.
    settings = train_settings(settings, search_trials=1, max_epochs=2, min_new_ratings=15,
                              **NLL_GATE)
    await add_rated(store, 20)  # server TENANT
    for tenant, count in ((2, 10), (3, 10)):
        for n in range(count):
            question, answer = QA[n % len(QA)]
            exchange = await store.exchanges.add(Exchange(tenant=tenant,
                                                          user_message=f"{question} {n}",
                                                          reply=answer))
            await store.exchanges.rate(exchange.id, "moderator", 1)
    await store.tenant(2).trainer.request_training("admin")

    outcomes = await TrainerService(settings, store).scheduled_cycle()

    assert sorted(o.guild for o in outcomes) == [TENANT, 2]
    assert all(o.outcome == "promoted" for o in outcomes), [o.reason for o in outcomes]
    assert await store.tenant(3).registry.active() == BASE_VERSION
    assert await store.tenant(3).trainer.recent_runs() == []


async def test_a_promotion_with_a_canary_share_starts_a_canary(settings, store, own):
    # The schedule test's training (three epochs, the NLL gate), with CANARY_SHARE set.
    settings = train_settings(settings, search_trials=1, max_epochs=3, canary_share=0.3,
                              **NLL_GATE)
    await add_rated(store, 20)
    outcome = await run_cycle(settings, store, TENANT, force=True, progress=False)
    assert outcome.outcome == "promoted", outcome
    canary = await own.canary.current()
    assert (canary.version, canary.active, canary.share) == (outcome.version, BASE_VERSION, 0.3)
    assert await own.registry.active() == BASE_VERSION  # the rest still get the base model
    assert any("a canary for 30% of new conversations" in note for note in outcome.notes)
