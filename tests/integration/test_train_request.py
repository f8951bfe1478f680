"""A "train now" request stays in the store until a cycle that saw it ends: a trainer killed
(here: cancelled) mid-cycle or a failed cycle leaves it for the next one, a request made while a
cycle runs is kept, and a poisoned request is dropped after a few failed cycles."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
import redis
from store_util import TENANT

from trainer import cycle as cycle_module
from trainer.cycle import REQUEST_ATTEMPTS, run_cycle
from trainer.schedule import TrainerService


def quick(settings):
    return settings.model_copy(update={"search_trials": 1, "max_epochs": 1,
                                       "min_new_ratings": 1000})


async def test_a_cycle_cut_short_leaves_the_request_for_the_next(settings, store, own, monkeypatch):
    started, release = threading.Event(), threading.Event()

    def stuck(*args, **kwargs):  # training that goes on until the trainer dies
        started.set()
        release.wait(30)
        raise RuntimeError("released")

    monkeypatch.setattr(cycle_module, "fit_candidate", stuck)
    await own.trainer.request_training("admin")
    task = asyncio.create_task(run_cycle(quick(settings), store, TENANT, progress=False))
    try:
        await asyncio.to_thread(started.wait, 30)
        task.cancel()  # the process stops here, mid-training
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        release.set()
    assert await own.trainer.training_requested()
    assert (await own.trainer.snapshot()).request["by"] == "admin"


async def test_a_failed_cycle_keeps_the_request_a_few_times(settings, store, own, monkeypatch,
                                                            caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("out of GPU memory")

    monkeypatch.setattr(cycle_module, "fit_candidate", broken)
    await own.trainer.request_training("admin")
    for attempt in range(1, REQUEST_ATTEMPTS):
        with pytest.raises(RuntimeError):
            await run_cycle(quick(settings), store, TENANT, progress=False)
        request = (await own.trainer.snapshot()).request
        assert request["by"] == "admin" and request["failed_attempts"] == attempt
    with pytest.raises(RuntimeError):
        await run_cycle(quick(settings), store, TENANT, progress=False)
    assert not await own.trainer.training_requested()
    assert any("dropped after" in r.message for r in caplog.records)
    assert [r["outcome"] for r in await own.trainer.recent_runs()] == \
        ["failed"] * REQUEST_ATTEMPTS


async def test_an_ended_cycle_settles_its_request_but_not_a_newer_one(settings, store, own,
                                                                      monkeypatch):
    real = cycle_module.fit_candidate
    key = store.keys("g", TENANT, "tr", "request")

    def asked_again_meanwhile(*args, **kwargs):
        with redis.Redis.from_url(settings.redis_url) as client:
            client.set(key, json.dumps({"by": "second admin", "at": 0}))
        return real(*args, **kwargs)

    await own.trainer.request_training("admin")
    first = await run_cycle(quick(settings), store, TENANT, progress=False)
    assert first.outcome == "skipped" and first.reason.startswith("no usable data")
    assert not await own.trainer.training_requested()  # the ended cycle used it up

    await own.trainer.request_training("admin")
    monkeypatch.setattr(cycle_module, "fit_candidate", asked_again_meanwhile)
    await run_cycle(quick(settings), store, TENANT, progress=False)
    assert (await own.trainer.snapshot()).request["by"] == "second admin"


async def test_a_request_waits_while_another_trainer_holds_the_lock(settings, store, own):
    service = TrainerService(quick(settings), store)
    await own.trainer.request_training("admin")
    assert await own.trainer.acquire_lock("other-trainer", 30)

    assert await service.poll_request() == []
    assert await own.trainer.recent_runs() == []  # no "skipped: lock held" every poll
    assert await own.trainer.training_requested()

    await own.trainer.release_lock("other-trainer")
    [outcome] = await service.poll_request()
    assert outcome.outcome == "skipped"  # no data: but it ran
    assert not await own.trainer.training_requested()
