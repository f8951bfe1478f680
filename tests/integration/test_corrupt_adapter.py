"""A damaged or foreign adapter never stops the bot nor replaces a good one: start-up falls
back to the newest version that loads, a rollback checks its target loads before it moves the
pointer, and /adapter status says why a version is not served."""

from __future__ import annotations

import io
import logging

from store_util import TENANT, raw_redis
from stream_util import RecordingSink
from waiting import eventually

from bot.core.dialogue import Turn
from bot.core.store import AdapterRecord
from bot.frontends.console import run_console
from bot.runtime import Runtime


async def save(own, settings, blob: bytes, *, activate: bool = True) -> str:
    record = await own.registry.save(AdapterRecord(base_model=settings.model_name), blob)
    if activate:
        await own.registry.activate(record.version)
    return record.version


async def damage(store, version: str) -> None:
    blob = await raw_redis(store).get(store.keys("ad", version, "blob"))
    await raw_redis(store).set(store.keys("ad", version, "blob"), blob[:-10] + b"0123456789")


async def test_start_up_serves_the_newest_loadable_version_and_keeps_following(
        fast, store, own, blobs, caplog):
    v1 = await save(own, fast, blobs["v1"])
    v2 = await save(own, fast, blobs["v2"])
    await damage(store, v2)

    with caplog.at_level(logging.INFO):
        async with Runtime(fast, store=store) as runtime:
            assert runtime.router.version_for(TENANT) == v1
            assert await own.registry.active() == v2  # the registry is not changed
            reply = await runtime.conversation.reply([Turn("user", "hello")], RecordingSink(),
                                                     source="console", user_id=1,
                                                     guild_id=None, channel_id=None)
            assert reply.adapter_version == v1
            v3 = await save(own, fast, blobs["v1"])  # the follower still follows
            await eventually(lambda: runtime.router.version_for(TENANT) == v3)
    about_v2 = [r for r in caplog.records if f"adapter {v2} of server {TENANT} cannot be "
                                             "served" in r.message]
    assert len(about_v2) == 1, [r.message for r in caplog.records]
    assert "sha256" in about_v2[0].message
    assert any(f"server {TENANT} is served by {v1} instead of its active adapter {v2}"
               in r.message for r in caplog.records)


async def test_the_console_starts_and_answers_with_a_damaged_active_adapter(fast, store, own,
                                                                            blobs):
    v1 = await save(own, fast, blobs["v1"])
    v2 = await save(own, fast, blobs["v2"])
    await damage(store, v2)
    out = io.StringIO()

    assert await run_console(fast, stdin=io.StringIO("hello\n/adapter status\n"),
                             stdout=out) == 0

    assert f"bot [{v1}]: " in out.getvalue()
    assert f"Active adapter: {v2}" in out.getvalue()
    assert f"(it cannot be loaded: adapter {v2} bytes do not match their sha256" in \
        out.getvalue()
    assert f"this process keeps serving {v1})" in out.getvalue()


async def test_a_rollback_to_a_version_that_does_not_load_moves_nothing(fast, store, own,
                                                                        engine, blobs):
    foreign = await save(own, fast, blobs["other_forged"])  # built for another model
    v1 = await save(own, fast, blobs["v1"])
    v2 = await save(own, fast, blobs["v2"])
    # Started after the saves: only the active v2 is loaded, v1 must load to roll back.
    async with Runtime(fast, store=store, generator=engine) as runtime:
        serving, actions = runtime.router, runtime.actions
        await damage(store, v1)
        history = await own.registry.history()
        assert history[0] == v1

        answer = await actions.rollback(TENANT)

        assert not answer.ok and answer.event is None
        assert f"Nothing rolled back: {v1} cannot be loaded" in answer.text
        assert "sha256" in answer.text
        assert await own.registry.active() == v2 and await own.registry.history() == history
        assert serving.version_for(TENANT) == v2

        # Once v1 is gone from the history the foreign one is next: it does not fit this model.
        await raw_redis(store).lpop(store.keys("g", TENANT, "ad", "history"))
        answer = await actions.rollback(TENANT)
        assert not answer.ok and f"{foreign} cannot be loaded" in answer.text
        assert "do not fit" in answer.text
        assert await own.registry.active() == v2 and serving.version_for(TENANT) == v2

        # A version that loads is rolled back to as before.
        await raw_redis(store).lpush(store.keys("g", TENANT, "ad", "history"), "base")
        answer = await actions.rollback(TENANT)
        assert answer.ok and answer.event.version == "base" and answer.event.previous == v2
        assert await own.registry.active() == "base" == serving.version_for(TENANT)
