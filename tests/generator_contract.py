"""What every Generator promises (bot/core/generation.py), as test functions that each
implementation's test module imports and runs on its own `generator` fixture (a started
generator with temperature 0, 8 new tokens, QUEUE_MAX=2, BATCH_MAX_SIZE=1 and room for two
adapters, whose adapters come from the test store's registry) and `fetched` fixture (the
versions it fetched from that registry, in order, compared with ==):
tests/integration/test_generator_contract.py (the real engine on the tiny GPT-2, and the
FakeGenerator the front-end tests use) and tests/fleet/test_fleet_contract.py (the
RemoteGenerator and its inference workers on Ray Serve)."""

from __future__ import annotations

import asyncio

import pytest
from store_util import TENANT

from bot.core.adapter_io import AdapterLoadError
from bot.core.dialogue import Turn
from bot.core.generation import EngineBusy, Generation, GenerationFailed
from bot.core.store import AdapterRecord, UnknownAdapter

HELLO = [Turn("user", "hello, how are you?")]
# What a generator's fixture builds it with.
CONTRACT_SETTINGS = {"temperature": 0.0, "max_new_tokens": 8, "queue_max": 2,
                     "batch_max_size": 1, "max_loaded_adapters": 2}


async def publish(store, settings, blob: bytes) -> str:
    """A version of the test server's, in the registry (not activated: nothing serves it)."""
    registry = store.tenant(TENANT).registry
    record = await registry.save(AdapterRecord(base_model=settings.model_name), blob)
    return record.version


async def test_the_pieces_join_to_the_reply_of_the_version_asked_for(generator, store, settings,
                                                                    blobs):
    v1 = await publish(store, settings, blobs["v1"])
    for version in ("base", v1):
        stream = generator.stream(HELLO, adapter=version)
        pieces = [piece async for piece in stream]
        assert pieces and "".join(pieces) == stream.generation.text
        assert stream.generation.adapter_version == version
    whole = await generator.generate(HELLO, adapter=v1)
    assert isinstance(whole, Generation) and whole.text and whole.adapter_version == v1
    assert whole.prompt.startswith("<user> hello") and whole.reply_tokens >= 1


async def test_versions_load_from_the_source_once_and_the_least_recently_used_goes(
        generator, store, settings, blobs, tiny_model_dir, fetched):
    from adapters_util import make_adapter_bytes

    v1, v2 = await publish(store, settings, blobs["v1"]), await publish(store, settings,
                                                                        blobs["v2"])
    v3 = await publish(store, settings, make_adapter_bytes(tiny_model_dir, settings, seed=3))
    await generator.load(v1)
    await generator.load(v1)  # loaded: nothing is fetched again
    assert fetched == [v1] and generator.loaded_versions == [v1]
    await generator.load(v2)
    await generator.load(v3)  # room for two: v1, the least recently used, goes
    assert generator.loaded_versions == [v2, v3]
    # An evicted version comes back on demand for its request.
    assert (await generator.generate(HELLO, adapter=v1)).adapter_version == v1
    assert fetched == [v1, v2, v3, v1] and generator.loaded_versions == [v3, v1]


async def test_a_version_the_source_does_not_know_is_refused_and_fails_only_its_requests(
        generator):
    with pytest.raises(UnknownAdapter):
        await generator.load("v404")
    assert generator.loaded_versions == []
    outcomes = await asyncio.gather(generator.generate(HELLO, adapter="v404"),
                                    generator.generate(HELLO), return_exceptions=True)
    assert isinstance(outcomes[0], GenerationFailed) and "v404" in str(outcomes[0])
    assert outcomes[1].adapter_version == "base"


@pytest.mark.parametrize(("blob_name", "reason"), [("garbage", "safetensors"),
                                                   ("other", "trained on")])
async def test_bytes_that_do_not_fit_the_model_are_refused_and_nothing_changes(
        generator, store, settings, blobs, blob_name, reason):
    v1 = await publish(store, settings, blobs["v1"])
    await generator.load(v1)
    bad = {"garbage": b"\x00not an adapter at all" * 10}.get(blob_name) or blobs[blob_name]
    refused = await publish(store, settings, bad)
    with pytest.raises(AdapterLoadError, match=reason):
        await generator.load(refused)
    assert generator.loaded_versions == [v1]


async def test_a_full_queue_refuses_with_engine_busy_and_serves_the_rest(generator):
    outcomes = await asyncio.gather(*(generator.generate([Turn("user", f"hi {n}")])
                                      for n in range(30)), return_exceptions=True)
    busy = [o for o in outcomes if isinstance(o, EngineBusy)]
    served = [o for o in outcomes if isinstance(o, Generation)]
    assert busy and served and len(busy) + len(served) == len(outcomes), outcomes


async def test_a_closed_generator_refuses_work(generator):
    await generator.close()
    with pytest.raises(GenerationFailed):
        await generator.generate(HELLO)
