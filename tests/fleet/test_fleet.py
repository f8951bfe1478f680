"""Inference workers on Ray Serve behind the RemoteGenerator (bot/fleet/), on the "fleet"
application of conftest.py (two replicas, room for two adapters each, greedy 8-token replies):
streamed replies with their version, equal to the local engine's; multiplexed routing; the
runtime's path with GENERATOR=ray; and a replica killed in the middle of a reply."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from fleet_util import remote_generator
from generator_contract import HELLO, publish
from store_util import TENANT, exchange_count, raw_redis
from stream_util import RecordingSink

from bot.core.dialogue import Turn
from bot.core.generation import BASE_VERSION, GenerationConfig
from bot.core.store import Store
from bot.fleet.remote import _router_holders
from bot.service.drafts import CUT_NOTES, DraftStream, cut_off

# A reply long enough to be mid-way when its replica is killed after its first piece (seconds
# of decoding; its first piece comes in milliseconds): the fleet model's 1024 positions less
# room for the prompt.
LONG = dict(max_new_tokens=1000, min_new_tokens=1000)
# The fleet model's greedy reply to this is several pieces.
SHORT_HELLO = [Turn("user", "hello")]
HANG_S = 120  # a call still running after this long is hung


@pytest.fixture
async def fleet_store(worker_apps, store):
    """The store on the fleet application's key prefix (what its replicas read)."""
    fleet = Store(raw_redis(store), prefix=worker_apps.fleet_prefix, user_secret="fleet-tests",
                  home_tenant=TENANT)
    await fleet.ping()
    return fleet


@pytest.fixture
def fleet_settings(settings, fleet_model_dir):
    """The test settings on the fleet's model (what its adapters are published for)."""
    return settings.model_copy(update={"model_name": str(fleet_model_dir)})


@pytest.fixture
async def fleet(worker_apps):
    made = remote_generator(worker_apps.fleet)
    await made.start()
    yield made
    await made.close()


def holders(generator, version: str) -> set[str]:
    return {replica for replica, state in generator.replicas.items()
            if version in state["loaded"]}


async def test_replies_stream_piece_by_piece_with_their_version_as_the_local_engine_makes_them(
        fleet, fleet_store, fleet_settings, fleet_blobs):
    from bot.engine.engine import Engine

    v1 = await publish(fleet_store, fleet_settings, fleet_blobs["v1"])
    config = GenerationConfig.from_settings(fleet_settings.model_copy(update={
        "temperature": 0.0, "max_new_tokens": 8, "torch_threads": 1}))
    local = Engine.load_model(config, fleet_store.registry.blob)
    try:
        for version in (BASE_VERSION, v1):
            stream = fleet.stream(SHORT_HELLO, adapter=version)
            pieces = aiter(stream)
            first = await anext(pieces)
            assert stream.generation is None  # the first piece came before the reply ended
            remote = [first] + [piece async for piece in pieces]
            assert "".join(remote) == stream.generation.text
            assert stream.generation.adapter_version == version
            mine = local.stream(SHORT_HELLO, adapter=version)
            assert [piece async for piece in mine] == remote and len(remote) > 1
            assert stream.generation.prompt == mine.generation.prompt
    finally:
        await local.close()


async def test_a_version_goes_to_the_replica_that_holds_it(fleet, fleet_store, fleet_settings,
                                                           fleet_blobs):
    versions = [await publish(fleet_store, fleet_settings, fleet_blobs[name])
                for name in ("v1", "v2")]
    for version in versions:
        await fleet.load(version)  # warmed on a replica, and routed there from now on
        warm = holders(fleet, version)
        # load waited on the router's own table (not public API: this says when Ray moves it)
        assert warm and warm <= _router_holders(fleet._handle, version)
        for _ in range(4):
            stream = fleet.stream(HELLO, adapter=version)
            async for _ in stream:
                pass
            assert stream.held and stream.replica in warm, (stream.replica, fleet.replicas)
            assert stream.generation.adapter_version == version


async def test_the_runtime_serves_through_the_workers_and_switches_once_a_worker_holds_it(
        worker_apps, fleet_store, fleet_settings, fleet_blobs):
    from bot.runtime import Runtime

    remote = fleet_settings.model_copy(update={"generator": "ray", "ray_address": "auto",
                                         "ray_app": worker_apps.fleet,
                                         "key_prefix": worker_apps.fleet_prefix,
                                         "cooldown_seconds": 0})
    v1 = await publish(fleet_store, fleet_settings, fleet_blobs["v1"])
    async with Runtime(remote, store=fleet_store) as runtime:
        assert type(runtime.generator).__name__ == "RemoteGenerator"
        switched = asyncio.Event()
        runtime.on_change(lambda event, record: _set(switched))
        await fleet_store.tenant(TENANT).registry.activate(v1)
        await asyncio.wait_for(switched.wait(), HANG_S)
        assert holders(runtime.generator, v1)  # loaded on a worker before the switch
        sink = RecordingSink()
        exchange = await runtime.conversation.reply(
            list(HELLO), sink, source="console", user_id="someone", guild_id=TENANT,
            channel_id=7)
        assert exchange.adapter_version == v1 and ("kept", exchange.id) in sink.calls


async def _set(event: asyncio.Event) -> None:
    event.set()


async def test_a_replica_killed_mid_reply_fails_that_reply_with_the_cut_off_note_and_the_next_is_served(  # noqa: E501
        ray_instance, fleet, fleet_store, fleet_settings, fleet_blobs):
    version = await publish(fleet_store, fleet_settings, fleet_blobs["v2"])
    await fleet.load(version)
    [doomed] = holders(fleet, version)
    state = fleet.replicas[doomed]
    stored_before = await exchange_count(fleet_store)
    draft = DraftStream(fleet.stream(HELLO, adapter=version, **LONG), version,
                        finish=lambda generation: pytest.fail("a cut reply was finished"))
    pieces = aiter(draft)
    await asyncio.wait_for(anext(pieces), HANG_S)
    os.kill(state["pid"], signal.SIGSTOP)  # frozen at once: it cannot finish the reply
    ray_instance.kill(ray_instance.get_actor(state["actor"], namespace="serve"))
    async with asyncio.timeout(HANG_S):
        async for _ in pieces:
            pass
    assert draft.draft is None and draft.failure.reason == "failed" and draft.text
    assert cut_off(draft.text, draft.failure.reason).endswith(CUT_NOTES["failed"])
    assert await exchange_count(fleet_store) == stored_before
    # The next request is served, by the replica still alive.
    reply = fleet.stream(HELLO, adapter=version)
    async with asyncio.timeout(HANG_S):
        async for _ in reply:
            pass
    assert reply.generation.adapter_version == version and reply.replica != doomed
