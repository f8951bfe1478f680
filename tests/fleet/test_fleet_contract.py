"""The Generator contract (tests/generator_contract.py) on the RemoteGenerator: each test talks
to the contract application on the local Ray Serve instance (conftest.py): one replica with
the contract's settings, given a new engine on the test's own key prefix, which pulls its
adapters from the registry itself; `fetched` is what that replica reports it fetched."""

from __future__ import annotations

import pytest
from fleet_util import remote_generator
from generator_contract import (  # noqa: F401 (the contract's tests, run here)
    test_a_closed_generator_refuses_work,
    test_a_full_queue_refuses_with_engine_busy_and_serves_the_rest,
    test_a_version_the_source_does_not_know_is_refused_and_fails_only_its_requests,
    test_bytes_that_do_not_fit_the_model_are_refused_and_nothing_changes,
    test_the_pieces_join_to_the_reply_of_the_version_asked_for,
    test_versions_load_from_the_source_once_and_the_least_recently_used_goes,
)


class ReportedFetches:
    """The versions the generator's replicas reported fetching from the registry, oldest
    first, as of their latest replies (compared with == like the local generators' list)."""

    def __init__(self, generator):
        self._generator = generator

    def versions(self) -> list[str]:
        return [v for state in self._generator.replicas.values() for v in state["fetched"]]

    def __eq__(self, other) -> bool:
        return self.versions() == other

    def __repr__(self) -> str:
        return repr(self.versions())


@pytest.fixture
async def generator(worker_apps, store, key_prefix):
    app = await worker_apps.fresh_contract(key_prefix)
    made = remote_generator(app)
    await made.start()
    yield made
    await made.close()


@pytest.fixture
def fetched(generator) -> ReportedFetches:
    return ReportedFetches(generator)
