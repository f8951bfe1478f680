"""The Generator contract (tests/generator_contract.py) on the local implementations: the real
engine on the tiny GPT-2 and the FakeGenerator the front-end tests use. Adapters come from a
real registry in Redis, the source each generator is built with."""

from __future__ import annotations

import pytest
from fake_generator import FakeGenerator
from generator_contract import (  # noqa: F401 (the contract's tests, run here)
    CONTRACT_SETTINGS,
    test_a_closed_generator_refuses_work,
    test_a_full_queue_refuses_with_engine_busy_and_serves_the_rest,
    test_a_version_the_source_does_not_know_is_refused_and_fails_only_its_requests,
    test_bytes_that_do_not_fit_the_model_are_refused_and_nothing_changes,
    test_the_pieces_join_to_the_reply_of_the_version_asked_for,
    test_versions_load_from_the_source_once_and_the_least_recently_used_goes,
)

from bot.core.generation import GenerationConfig
from bot.engine.engine import Engine


@pytest.fixture
def fetched() -> list[str]:
    """Every version a generator fetched from the registry, in order."""
    return []


@pytest.fixture(params=["engine", "fake"])
async def generator(request, settings, store, fetched):
    config = GenerationConfig.from_settings(settings.model_copy(update=CONTRACT_SETTINGS))

    async def source(version: str) -> bytes:
        fetched.append(version)
        return await store.registry.blob(version)

    made = Engine.load_model(config, source) if request.param == "engine" \
        else FakeGenerator(config, source)
    await made.start()
    yield made
    await made.close()
