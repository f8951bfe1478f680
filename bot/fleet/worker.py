"""One inference worker replica: the local engine (bot/engine/engine.py) inside a Ray Serve
deployment, its adapters pulled from the registry in Redis by the worker itself.

The adapter version is Ray Serve's multiplexed model id: a request for a version goes to a
replica that already holds it when there is one (Serve's router learns which replica holds
what from `_hold`, wrapped by `serve.multiplexed`). That bookkeeping only steers routing; the
engine's own AdapterCache still decides what is really loaded, so an adapter that running rows
pin is never deleted, and a version Serve forgot is loaded again on demand by the engine.

A replica reads its settings from its own environment (the worker host's REDIS_URL,
MODEL_NAME, DEVICE ...), so no secret travels through Ray; the deployment's user_config
(`reconfigure`) replaces some of them (tests, one-box runs). Each reply streams as wire.py
says, ending with the replica's state.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os

import ray
from ray import serve

from bot.core.config import load_settings
from bot.core.generation import BASE_VERSION, GenerationConfig
from bot.core.metrics import Metrics
from bot.core.store import Store
from bot.engine.engine import Engine
from bot.fleet import wire

log = logging.getLogger(__name__)

RECENT_FETCHES = 64  # how many fetched versions `state` reports


class InferenceWorker:
    """A Serve deployment class (app.py wraps it with `serve.deployment`). Its user_config is
    the settings it changes from its environment's: Serve hands it to `reconfigure` at start,
    which builds the engine (called again, it swaps in a new one in place)."""

    def __init__(self):
        self._context = serve.get_replica_context()
        self.replica = self._context.replica_id.unique_id
        self.metrics = Metrics()
        self._metrics_server = None
        self.engine: Engine | None = None
        self._store: Store | None = None
        self._hold = None
        self._fetched: collections.deque[str] = collections.deque(maxlen=RECENT_FETCHES)

    async def reconfigure(self, overrides: dict) -> None:
        """Build the engine from this host's settings with `overrides`, then retire the
        previous one (a redeploy with other settings: its running replies fail, with the
        cut-off note on their front ends)."""
        settings = load_settings(**overrides)
        config = GenerationConfig.from_settings(settings)
        if config.torch_threads is None and settings.worker_num_cpus >= 1:
            # one thread per core the replica reserved: replicas on one host must not fight
            config = dataclasses.replace(config, torch_threads=int(settings.worker_num_cpus))
        store = Store.from_settings(settings)
        fetched: collections.deque[str] = collections.deque(maxlen=RECENT_FETCHES)

        async def fetch(version: str) -> bytes:
            blob = await store.registry.blob(version)
            fetched.append(version)
            return blob

        engine = await asyncio.to_thread(Engine.load_model, config, fetch)
        engine.use_metrics(self.metrics)

        async def hold(version: str) -> str:  # a plain function: Serve keeps state on it
            await engine.load(version)
            return version

        old = (self.engine, self._store, self._hold)
        self.engine, self._store, self._fetched = engine, store, fetched
        # Serve's routing view of the versions held here, at most MAX_LOADED_ADAPTERS.
        self._hold = serve.multiplexed(max_num_models_per_replica=config.max_loaded_adapters)(
            hold)
        if self._metrics_server is None:
            self._metrics_server = self.metrics.serve(_metrics_port(settings.metrics_port,
                                                                    self._context))
        await _retire(*old)
        log.info("inference worker replica %s ready (model %s on %s)", self.replica,
                 config.model_name, config.device)

    # --- what a RemoteGenerator calls ---------------------------------------------------------

    async def stream(self, request: dict):
        """The reply to `request` (wire.encode_request), item by item (wire.py)."""
        engine, version = self.engine, request["adapter"]
        held = version in engine.loaded_versions or version == BASE_VERSION
        try:
            reply = engine.stream(wire.decode_turns(request["turns"]), request["style"],
                                  adapter=version, **request["overrides"])
        except (TypeError, ValueError) as error:
            yield wire.encode_error(error)
            return
        if version != BASE_VERSION:
            try:
                await self._hold(version)
            except Exception as error:  # the engine logs it; only this request fails
                log.error("adapter %s cannot be served: %s", version, error)
                yield {"error": "failed", "message": f"adapter {version} cannot be served"}
                return
        try:
            async for piece in reply:
                yield {"piece": piece}
        except Exception as error:  # the protocol's errors keep their class; others: failed
            yield wire.encode_error(error)
            return
        yield {"end": wire.encode_generation(reply.generation), **self.state(), "held": held}

    async def load(self, version: str, sha256: str | None = None) -> dict:
        """Generator.load on this replica: the replica's state, or a wire error."""
        try:
            if version != BASE_VERSION:
                await self._hold(version)
            await self.engine.load(version, sha256)  # reloads when the bytes changed
        except Exception as error:
            return wire.encode_error(error)
        return self.state()

    async def holds(self, version: str) -> dict:
        """Whether this replica holds `version` now (loads nothing): RemoteGenerator asks with
        `version` as the multiplexed id, so the answer also says where Serve routes it."""
        return {"holds": version in self.engine.loaded_versions, **self.state()}

    def state(self) -> dict:
        """This replica's name, process, loaded versions (least recently used first) and the
        versions it fetched from the registry lately (oldest first)."""
        return {"replica": self.replica, "pid": os.getpid(),
                "actor": ray.get_runtime_context().get_actor_name(),
                "loaded": self.engine.loaded_versions, "fetched": list(self._fetched)}

    async def __del__(self):  # Serve calls it when the replica stops
        await _retire(self.engine, self._store, self._hold)
        self.metrics.close(self._metrics_server)


async def _retire(engine: Engine | None, store: Store | None, hold) -> None:
    """Close what a replaced (or stopping) configuration used."""
    wrapper = getattr(hold, "__serve_multiplex_wrapper", None)
    if wrapper is not None:  # it reports the versions it held to Serve's routers
        await wrapper.shutdown()
    if engine is not None:
        await engine.close()
    if store is not None:
        await store.close()


def _metrics_port(port: int | None, context) -> int | None:
    """METRICS_PORT plus this replica's rank on its host, so replicas there do not collide."""
    if port is None:
        return None
    return port + int(getattr(context.rank, "local_rank", 0) or 0)
