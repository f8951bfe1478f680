"""Every bad kind of adapter (tests/bad_adapters.py) is refused wherever an adapter enters
service: load (a registry event), start-up, rollback and publish; the version before it keeps
serving, and the refusal is one line that names the check, in the log, in the store (/adapter
status) and to the follower's listeners (the mod log). Real Redis, engine, peft, probe."""

from __future__ import annotations

import asyncio
import io
import logging
import os

import pytest
from lively import adapter_kit, build_lively
from store_util import TENANT

from bot.core.dialogue import Turn
from bot.core.store import AdapterRecord
from bot.engine.engine import Engine
from bot.frontends.console import run_console
from bot.frontends.discord.app import modlog_text
from bot.runtime import Runtime
from bot.service.actions import Actions
from bot.service.follow import Serving
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
async def engine(sane):
    engine = Engine.from_settings(sane)
    await engine.start()
    yield engine
    await engine.close()


async def save(own, settings, blob: bytes) -> str:
    record = await own.registry.save(AdapterRecord(base_model=settings.model_name), blob)
    await own.registry.activate(record.version)
    return record.version


async def eventually(predicate, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def hello(runtime) -> str:
    reply = await runtime.conversation.chat([Turn("user", "hello")], source="console", user_id=1)
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
            assert runtime.serving.version_for(TENANT) == good
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
        assert runtime.serving.version_for(TENANT) == good
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
    serving = Serving(store, engine)
    await serving.refresh(TENANT)
    history = await own.registry.history()

    answer = await Actions(sane, store, engine, serving).rollback(TENANT)

    assert not answer.ok and answer.event is None
    assert f"Nothing rolled back: {bad} cannot be loaded ({check}: " in answer.text
    assert await own.registry.active() == good and await own.registry.history() == history
    assert serving.version_for(TENANT) == good
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
        assert runtime.serving.version_for(TENANT) == good
        newer = await save(own, sane, kit["v2"])
        await eventually(lambda: runtime.serving.version_for(TENANT) == newer)
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

    serving = Serving(store, engine)
    await serving.start_up(listen)
    await Serving(store, engine).start_up(listen)  # a second process
    assert heard == ["refused"]
    assert (await own.registry.refusal()).version == bad
    assert serving.version_for(TENANT) == good


async def test_the_console_says_so_and_answers_with_the_version_before(sane, own, kit):
    read_fd, write_fd = os.pipe()
    stdin, feed = os.fdopen(read_fd, "r"), os.fdopen(write_fd, "w")
    out = io.StringIO()
    session = asyncio.create_task(run_console(sane, stdin=stdin, stdout=out))

    async def wait_for(text: str) -> None:
        async with asyncio.timeout(30):
            while text not in out.getvalue():
                await asyncio.sleep(0.05)

    feed.write("hello\n")
    feed.flush()
    await wait_for("bot [base]: ")
    await asyncio.sleep(0.2)  # the follower subscribed before the first line was read
    good = await save(own, sane, kit["v1"])
    await wait_for(f"[adapter activated: now serving {good}]")
    bad = await save(own, sane, kit["bad"]["lora_alpha 1e38"][0])
    line = f"{bad} refused: scale too large; serving {good}"
    await wait_for(f"[adapter {line}]")
    feed.write("hello again\n/adapter status\n")
    feed.close()

    assert await asyncio.wait_for(session, 30) == 0
    assert f"bot [{good}]: " in out.getvalue()
    assert f"Active adapter: {bad}\n{line}\n" in out.getvalue()
    stdin.close()
