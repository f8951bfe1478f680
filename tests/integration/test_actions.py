"""Moderator and admin acts (bot.service.actions) against real Redis and the real engine."""

from __future__ import annotations

import asyncio

from store_util import TENANT

from bot.core.store import AdapterRecord


async def test_concurrent_rollbacks_each_name_the_step_they_made(runtime, blobs,
                                                                 tiny_model_dir, own):
    for seed_blob in (blobs["v1"], blobs["v2"], blobs["v1"]):
        record = await own.registry.save(AdapterRecord(base_model=str(tiny_model_dir)),
                                           seed_blob)
        await own.registry.activate(record.version)
    actions = runtime.actions

    answers = await asyncio.gather(actions.rollback(TENANT), actions.rollback(TENANT))

    steps = sorted((a.event.previous, a.event.version) for a in answers)
    assert steps == [("v2", "v1"), ("v3", "v2")]
    assert await own.registry.active() == "v1"
    assert {a.text.split(":")[0] for a in answers} == {"Rolled back from v2",
                                                       "Rolled back from v3"}
