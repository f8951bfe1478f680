"""One local Ray instance for the whole test run, and the two inference worker applications
the fleet tests use, deployed together when the first test asks (their replicas import torch
and load their models in parallel, which is most of the time these tests take).

Replicas reserve no CPU (WORKER_NUM_CPUS=0) and run one torch thread, so a 2-core machine holds
them all. Each contract test reconfigures the contract application's replica in place onto its
own key prefix, so it starts from an engine that holds nothing, as a fresh local one does.
"""

from __future__ import annotations

import os
import uuid

import pytest
from generator_contract import CONTRACT_SETTINGS

import bot.fleet  # noqa: F401 (sets Ray Serve's routing settings before ray is imported)
from bot.core.config import load_settings

# The contract's local generators' settings (tests/generator_contract.py).
CONTRACT = CONTRACT_SETTINGS
# The application of test_fleet.py: two replicas with room for two adapters each, on a GPT-2
# still tiny but with room for 1000-token replies that take a while (the kill test's).
FLEET = dict(temperature=0.0, max_new_tokens=8, max_loaded_adapters=2)
FLEET_MODEL = dict(n_layer=4, n_embd=128, n_positions=1024)
FLEET_REPLICAS = 2


@pytest.fixture(scope="session")
def ray_instance(tmp_path_factory):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 1024 * 1024,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    serve.start(proxy_location="Disabled")
    yield ray
    serve.shutdown()
    ray.shutdown()


class WorkerApps:
    """The deployed applications: "contract" (one replica, reconfigured for each contract
    test: `fresh_contract`) and "fleet" (FLEET_REPLICAS replicas on `fleet_prefix`)."""

    def __init__(self, common: dict, fleet_prefix: str, fleet_model: str):
        self.common = common
        self.fleet = "fleet"
        self.fleet_prefix = fleet_prefix
        self.fleet_model = fleet_model

    def targets(self) -> list:
        from ray import serve

        return [serve.RunTarget(target=self._app("contract", CONTRACT, "unused", 1),
                                name="contract", route_prefix=None),
                serve.RunTarget(target=self._app("fleet", {**FLEET, "model_name": self.fleet_model},
                                                 self.fleet_prefix, FLEET_REPLICAS),
                                name="fleet", route_prefix=None)]

    async def fresh_contract(self, key_prefix: str) -> str:
        """The contract application, its one replica now on a new engine that reads the
        registry under `key_prefix`: the replica's own `reconfigure`, as Serve calls it at
        start with the deployment's user_config (a redeploy would start a new process)."""
        from ray import serve

        overrides = {**self.common, **CONTRACT, "key_prefix": key_prefix}
        await serve.get_app_handle("contract").reconfigure.remote(overrides)
        return "contract"

    def _app(self, name: str, changes: dict, key_prefix: str, replicas: int):
        from bot.fleet.app import worker_app

        overrides = {**self.common, **changes, "key_prefix": key_prefix}
        settings = load_settings(**overrides, worker_num_cpus=0, worker_replicas=replicas,
                                 ray_app=name)
        return worker_app(settings, overrides)


@pytest.fixture(scope="session")
def fleet_model_dir(tmp_path_factory):
    from trainer.demo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("fleet-gpt2"), **FLEET_MODEL)


@pytest.fixture(scope="session")
def fleet_blobs(fleet_model_dir):
    """Two adapters for the fleet's model."""
    from adapters_util import make_adapter_bytes

    lora = load_settings(_env_file=None)
    return {name: make_adapter_bytes(fleet_model_dir, lora, seed=seed)
            for name, seed in (("v1", 1), ("v2", 2))}


@pytest.fixture(scope="session")
def worker_apps(ray_instance, redis_server, tiny_model_dir, fleet_model_dir):
    from ray import serve

    common = dict(redis_url=redis_server.url, model_name=str(tiny_model_dir), device="cpu",
                  model_dtype="float32", torch_threads=1, _env_file=None)
    apps = WorkerApps(common, "f" + uuid.uuid4().hex[:10], str(fleet_model_dir))
    serve.run_many(apps.targets())  # returns once every replica is up
    return apps

