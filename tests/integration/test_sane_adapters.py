"""Every bad kind of adapter (tests/bad_adapters.py) is refused wherever an adapter enters
service: load (a registry event), start-up, rollback and publish; the version before it keeps
serving, and the refusal is one line that names the check, in the log, in the store (/adapter
status) and to the follower's listeners (the mod log). Real Redis, engine, peft, probe."""

from __future__ import annotations

import asyncio
import logging

import pytest
from console_session import PipedConsole
from lively import adapter_kit, build_lively
from store_util import TENANT
from stream_util import RecordingSink
from waiting import eventually

from bot.core.dialogue import Turn
from bot.core.store import AdapterRecord
from bot.engine.engine import Engine
from bot.frontends.discord.modlog import modlog_text
from bot.runtime import Runtime
from bot.service.follow import AdapterRouter
from trainer.transfer import TransferRefused, publish_file

KINDS = ["NaN weights", "Inf weights", "lora_alpha 1e38", "weights x100", "wrong shapes",
         "2^63 header length", "junk header", "rank 4096, partial tensors", "rank 300",
         "wte target", "DoRA", "collapse"]


@pytest.fixture(scope="module")
def lively(tmp_path_factory):
    return build_lively(tmp_path_factory.mktemp("lively-gpt2"))


@pytest.fixture(scope="module")
def kit(lively, tmp_path_factory):
    return adapter_kit(lively, tmp_path_factory.mktemp("other-gpt2"))


@pytest.fixture
def sane(settings, lively):
    """Settings on the lively model: greedy 8-token replies, no cooldown."""
    return settings.model_copy(update={"model_name": str(lively), "max_new_tokens": 8,
                                       "temperature": 0.0, "cooldown_seconds": 0})


@pytest.fixture
async def engine(sane, store):
    engine = Engine.from_settings(sane, store.registry.blob)
    await engine.start()
    yield engine
    await engine.close()


async def save(own, settings, blob: bytes) -> str:
    record = await own.registry.save(AdapterRecord(base_model=settings.model_name), blob)
    await own.registry.activate(record.version)
    return record.version


async def hello(runtime) -> str:
    reply = await runtime.conversation.reply([Turn("user", "hello")], RecordingSink(),
                                             source="console", user_id=1, guild_id=None,
                                             channel_id=None)
    return reply.adapter_version


@pytest.mark.parametrize("kind", KINDS)
async def test_load_a_bad_version_made_active_is_refused_and_the_one_before_serves(
        kind, sane, store, own, engine, kit, caplog):
    blob, check = kit["bad"][kind]
    good = await save(own, sane, kit["v1"])
    heard = []

    async def listen(event, record):
        heard.append(event)

    with caplog.at_level(logging.INFO):
        async with Runtime(sane, store=store, generator=engine) as runtime:
            runtime.on_change(listen)
            bad = await save(own, sane, blob)
            await eventually(lambda: heard)
            assert runtime.router.version_for(TENANT) == good
            assert await hello(runtime) == good
            status = (await runtime.actions.adapter_status(TENANT)).text

    line = f"{bad} refused: {check}; serving {good}"
    assert status.splitlines()[:2] == [f"Active adapter: {bad}", line]
    assert [(e.kind, e.version, e.previous, e.reason) for e in heard] == [
        ("refused", bad, good, check)]
    assert modlog_text(heard[0], None) == f"Adapter {line}"
    logged = [r.message for r in caplog.records if f"adapter {bad} cannot be served" in r.message]
    assert len(logged) == 1 and f"server {TENANT} keeps {good}: {check}: " in logged[0]
    refusal = await own.registry.refusal()
    assert (refusal.version, refusal.check, refusal.serving) == (bad, check, good)


@pytest.mark.parametrize("kind", KINDS)
async def test_start_up_with_a_bad_active_version_serves_the_one_before(kind, sane, store, own,
                                                                         engine, kit):
    blob, check = kit["bad"][kind]
    good = await save(own, sane, kit["v1"])
    bad = await save(own, sane, blob)

    async with Runtime(sane, store=store, generator=engine) as runtime:
        assert runtime.router.version_for(TENANT) == good
        assert await hello(runtime) == good
        status = (await runtime.actions.adapter_status(TENANT)).text

    assert await own.registry.active() == bad  # the registry is not changed
    assert f"{bad} refused: {check}; serving {good}" in status.splitlines()
    assert bad not in engine.loaded_versions


@pytest.mark.parametrize("kind", KINDS)
async def test_rollback_to_a_bad_version_moves_nothing(kind, sane, store, own, engine, kit):
    blob, check = kit["bad"][kind]
    bad = await save(own, sane, blob)
    good = await save(own, sane, kit["v1"])
    # Started after the saves: only the active good version is loaded.
    async with Runtime(sane, store=store, generator=engine) as runtime:
        history = await own.registry.history()

        answer = await runtime.actions.rollback(TENANT)

        assert not answer.ok and answer.event is None
        assert f"Nothing rolled back: {bad} cannot be loaded ({check}: " in answer.text
        assert await own.registry.active() == good and await own.registry.history() == history
        assert runtime.router.version_for(TENANT) == good
    assert (await engine.generate([Turn("user", "hello")], adapter=good)).adapter_version == good


@pytest.mark.parametrize("kind", KINDS)
async def test_publish_of_a_bad_file_changes_nothing(kind, sane, own, kit, tmp_path):
    blob, check = kit["bad"][kind]
    good = await save(own, sane, kit["v1"])
    path = tmp_path / "adapter.safetensors"
    path.write_bytes(blob)

    with pytest.raises(TransferRefused) as refused:
        await publish_file(sane, own, path)

    assert str(refused.value).startswith(f"refused: {check}: ")
    assert await own.registry.active() == good
    assert [r.version for r in await own.registry.records()] == [good]


async def test_a_newer_version_that_serves_clears_the_refusal(sane, store, own, engine, kit):
    good = await save(own, sane, kit["v1"])
    async with Runtime(sane, store=store, generator=engine) as runtime:
        bad = await save(own, sane, kit["bad"]["NaN weights"][0])
        async with asyncio.timeout(30):
            while await own.registry.refusal() is None:
                await asyncio.sleep(0.02)
        assert runtime.router.version_for(TENANT) == good
        newer = await save(own, sane, kit["v2"])
        await eventually(lambda: runtime.router.version_for(TENANT) == newer)
        status = (await runtime.actions.adapter_status(TENANT)).text
    assert await own.registry.refusal() is None
    assert "refused" not in status and bad not in status


async def test_the_refusal_is_recorded_once_and_told_once(sane, store, own, engine, kit):
    """Refused again (another process, a restart) it is no news: the mod log hears it once."""
    good = await save(own, sane, kit["v1"])
    bad = await save(own, sane, kit["bad"]["Inf weights"][0])
    heard = []

    async def listen(event, record):
        heard.append(event.kind)

    serving = AdapterRouter(store, engine)
    await serving.start_up(listen)
    await AdapterRouter(store, engine).start_up(listen)  # a second process
    assert heard == ["refused"]
    assert (await own.registry.refusal()).version == bad
    assert serving.version_for(TENANT) == good


async def test_the_console_says_so_and_answers_with_the_version_before(sane, own, kit):
    console = PipedConsole(sane)
    console.say("hello")
    await console.wait_for("bot [base]: ")
    await asyncio.sleep(0.2)  # the follower subscribed before the first line was read
    good = await save(own, sane, kit["v1"])
    await console.wait_for(f"[adapter activated: now serving {good}]")
    bad = await save(own, sane, kit["bad"]["lora_alpha 1e38"][0])
    line = f"{bad} refused: scale too large; serving {good}"
    await console.wait_for(f"[adapter {line}]")
    console.say("hello again", "/adapter status")

    assert await console.end() == 0
    assert f"bot [{good}]: " in console.out.getvalue()
    assert f"Active adapter: {bad}\n{line}\n" in console.out.getvalue()
