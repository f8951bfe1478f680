"""One inference worker replica: the local engine (bot/engine/engine.py) inside a Ray Serve
deployment, its adapters pulled from the registry in Redis by the worker itself.

The adapter version is Ray Serve's multiplexed model id: a request for a version goes to a
replica that already holds it when there is one (Serve's router learns which replica holds
what from `_hold`, wrapped by `serve.multiplexed`). That bookkeeping only steers routing; the
engine's own AdapterCache still decides what is really loaded, so an adapter that running rows
pin is never deleted, and a version Serve forgot is loaded again on demand by the engine.

A replica reads its settings from its own environment (the worker host's REDIS_URL,
MODEL_NAME, DEVICE ...), so no secret travels through Ray; `overrides` (tests, one-box runs)
replace some of them. Each reply streams as wire.py says, ending with the replica's state.
"""

from __future__ import annotations

import collections
import logging

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
    """A Serve deployment class (app.py wraps it with `serve.deployment`)."""

    def __init__(self, overrides: dict | None = None):
        settings = load_settings(**(overrides or {}))
        config = GenerationConfig.from_settings(settings)
        if config.torch_threads is None and settings.worker_num_cpus >= 1:
            # one thread per core the replica reserved: replicas on one host must not fight
            config = GenerationConfig(**{**vars(config),
                                         "torch_threads": int(settings.worker_num_cpus)})
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self._store = Store.from_settings(settings)
        self._fetched: collections.deque[str] = collections.deque(maxlen=RECENT_FETCHES)
        self.engine = Engine.load_model(config, self._fetch)
        self.metrics = Metrics()
        self.engine.use_metrics(self.metrics)
        self._metrics_server = self.metrics.serve(_metrics_port(settings.metrics_port, context))
        async def attach(version: str) -> str:  # a plain function: Serve keeps state on it
            await self.engine.load(version)
            return version

        # Serve's routing view of the versions held here, at most MAX_LOADED_ADAPTERS.
        self._hold = serve.multiplexed(max_num_models_per_replica=config.max_loaded_adapters)(
            attach)
        log.info("inference worker replica %s ready (model %s on %s)", self.replica,
                 config.model_name, config.device)

    async def _fetch(self, version: str) -> bytes:
        blob = await self._store.registry.blob(version)
        self._fetched.append(version)
        return blob

    # --- what a RemoteGenerator calls ---------------------------------------------------------

    async def stream(self, request: dict):
        """The reply to `request` (wire.encode_request), item by item (wire.py)."""
        version = request["adapter"]
        held = version in self.engine.loaded_versions or version == BASE_VERSION
        try:
            reply = self.engine.stream(wire.decode_turns(request["turns"]), request["style"],
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
        """This replica's name, loaded versions (least recently used first) and the versions
        it fetched from the registry lately (oldest first)."""
        return {"replica": self.replica, "loaded": self.engine.loaded_versions,
                "fetched": list(self._fetched)}

    async def __del__(self):
        await self.engine.close()
        await self._store.close()
        self.metrics.close(self._metrics_server)


def _metrics_port(port: int | None, context) -> int | None:
    """METRICS_PORT plus this replica's rank on its host, so replicas there do not collide."""
    if port is None:
        return None
    return port + int(getattr(context.rank, "local_rank", 0) or 0)
