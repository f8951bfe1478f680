"""RemoteGenerator: the Generator protocol (bot/core/generation.py) served by inference workers
on Ray Serve (`python -m bot worker`, worker.py) instead of an engine in this process.

Each request carries its adapter version as the multiplexed model id, so Serve routes it to a
replica holding that version when there is one; the replica pulls what it lacks from the
registry itself (the AdapterSource given here is not called). Pieces stream back one by one and
the reply ends with the version that produced it. Errors keep the local engine's contract:
EngineBusy (the engine's queue or Serve's is full), GenerationFailed, PromptTooLong, and on
`load` what the registry raises (UnknownAdapter, AdapterCorrupt) or AdapterLoadError. A replica
that dies before the reply's first piece costs nothing: the request goes to another replica;
one that dies after it fails the reply with GenerationFailed, so the front end ends the part
shown with the cut-off note and stores nothing.

`load(version)` warms the version on a replica and returns once Serve routes the version's
requests there, so a server switches to a version only when a worker holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, RayServeException

from bot.core.dialogue import Turn
from bot.core.generation import (
    BASE_VERSION,
    AdapterSource,
    EngineBusy,
    Generation,
    GenerationFailed,
    consumed,
)
from bot.core.metrics import Metrics
from bot.fleet import wire

log = logging.getLogger(__name__)

# A request whose replica died before its first piece is sent again, this many times at most.
RETRIES_BEFORE_FIRST_PIECE = 2
WORKER_FAILED = "the inference worker failed"
STATE = ("loaded", "fetched", "pid", "actor")  # what a replica reports of itself


@dataclass(frozen=True)
class RemoteConfig:
    """Where the workers are: the Ray cluster and the Serve application's name."""

    address: str | None  # RAY_ADDRESS (None: this process already joined a cluster)
    app_name: str = "lbot-inference"  # RAY_APP
    warm_timeout_s: float = 30.0  # how long `load` waits for Serve to route to the holder

    @classmethod
    def from_settings(cls, settings) -> RemoteConfig:
        return cls(address=settings.ray_address, app_name=settings.ray_app)


class RemoteGenerator:
    """See the module docstring."""

    def __init__(self, config: RemoteConfig, adapter_source: AdapterSource | None = None):
        self.config = config
        self._handle = None
        self._closed = False
        # replica -> its state as it reported it last (worker.py's `state`: loaded versions,
        # versions it fetched lately, its process and actor)
        self.replicas: dict[str, dict] = {}
        self.metrics = Metrics()

    @property
    def loaded_versions(self) -> list[str]:
        """The versions the replicas reported loaded in their latest replies (each replica's
        least recently used first)."""
        seen: dict[str, None] = {}
        for state in self.replicas.values():
            seen.update(dict.fromkeys(state["loaded"]))
        return list(seen)

    def use_metrics(self, metrics: Metrics) -> None:
        """Report refusals and this side's time to first piece to `metrics` (the workers
        report their engines' metrics on their own METRICS_PORT)."""
        self.metrics = metrics

    async def start(self) -> None:
        if self._closed:
            raise GenerationFailed("the generator is closed")
        if self._handle is None:
            from bot.fleet.app import connect

            await asyncio.to_thread(connect, self.config.address)
            self._handle = await asyncio.to_thread(serve.get_app_handle, self.config.app_name)

    async def close(self) -> None:
        self._closed = True

    async def generate(self, turns: list[Turn], style: str | None = None, *,
                       adapter: str = BASE_VERSION, **overrides) -> Generation:
        return await consumed(self.stream(turns, style, adapter=adapter, **overrides))

    def stream(self, turns: list[Turn], style: str | None = None, *,
               adapter: str = BASE_VERSION, **overrides) -> RemoteStream:
        return RemoteStream(self, wire.encode_request(turns, style, adapter, overrides))

    async def load(self, version: str, sha256: str | None = None) -> None:
        """See Generator.load: warm `version` on a replica, then wait until Serve routes its
        requests to a replica holding it."""
        await self._ready()
        if version == BASE_VERSION:  # no adapter: every replica serves it
            return
        reply = await self._call("load", version, version, sha256)
        if "error" in reply:
            raise wire.decode_error(reply)
        self._note(reply)
        holder = reply["replica"]
        deadline = time.monotonic() + self.config.warm_timeout_s
        while time.monotonic() < deadline:
            if await self._routed_to_holder(version, holder):
                return
            await asyncio.sleep(0.05)  # Serve's routers learn of a new holder within ~0.1 s
        log.warning("adapter %s is loaded on a worker, but Serve does not route to it yet",
                    version)

    async def _routed_to_holder(self, version: str, holder: str) -> bool:
        """Whether this process's Serve router sends `version` to `holder` now."""
        known = _router_holders(self._handle, version)
        if known is not None:
            return holder in known
        # Without the router's table, ask: a replica answers whether it holds the version.
        reply = await self._call("holds", version, version)
        self._note(reply)
        return reply["holds"]

    # --- the wire -------------------------------------------------------------------------------

    async def _ready(self) -> None:
        if self._closed:
            raise GenerationFailed("the generator is closed")
        await self.start()

    async def _call(self, method: str, version: str, *args) -> dict:
        """One unary call to the replica Serve picks for `version`."""
        try:
            return await getattr(self._routed(version), method).remote(*args)
        except BackPressureError as error:
            raise EngineBusy("the inference workers' queue is full") from error
        except (RayError, RayServeException) as error:
            log.error("inference worker call %s failed: %s", method, error)
            raise GenerationFailed(WORKER_FAILED) from error

    def _routed(self, version: str, *, stream: bool = False):
        model_id = "" if version == BASE_VERSION else version
        return self._handle.options(multiplexed_model_id=model_id, stream=stream)

    def _note(self, reply: dict) -> None:
        """Keep what a replica reported of itself."""
        self.replicas[reply["replica"]] = {key: reply[key] for key in STATE}


class RemoteStream:
    """A RemoteGenerator's ReplyStream: the pieces of one reply as the worker decodes them."""

    def __init__(self, generator: RemoteGenerator, request: dict):
        self._generator = generator
        self._request = request
        self.generation: Generation | None = None
        self.replica: str | None = None  # the replica that served it
        self.held: bool | None = None  # whether that replica held the version beforehand
        self.first_piece_s: float | None = None  # from the first `__anext__` to the first piece

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[str]:
        await self._generator._ready()
        started = time.perf_counter()
        for attempt in range(RETRIES_BEFORE_FIRST_PIECE + 1):
            pieces = 0
            one_try = self._attempt(started)
            try:
                async for piece in one_try:
                    pieces += 1
                    yield piece
                return
            except _ReplicaLost as lost:
                if pieces or attempt == RETRIES_BEFORE_FIRST_PIECE:
                    raise GenerationFailed(WORKER_FAILED + (" mid-reply" if pieces else "")) \
                        from lost.__cause__
                log.warning("inference worker lost before the first piece; sending again")
            finally:  # a consumer that stopped early stops the worker's row too
                await one_try.aclose()

    async def _attempt(self, started: float) -> AsyncIterator[str]:
        """One try on one replica: its pieces; its end sets `generation`."""
        generator, responses = self._generator, None
        try:
            responses = generator._routed(self._request["adapter"], stream=True) \
                .stream.remote(self._request)
            async for item in responses:
                if "piece" in item:
                    if self.first_piece_s is None:
                        self.first_piece_s = time.perf_counter() - started
                        generator.metrics.time_to_first_token.observe(self.first_piece_s)
                    yield item["piece"]
                elif "error" in item:
                    if item["error"] == "busy":
                        generator.metrics.requests_refused.inc()
                    raise wire.decode_error(item)
                else:
                    generator._note(item)
                    self.replica, self.held = item["replica"], item["held"]
                    self.generation = wire.decode_generation(item["end"])
                    return
            raise GenerationFailed("the reply stream ended without its end")
        except (GeneratorExit, asyncio.CancelledError):
            # The consumer left: free the worker's row (best effort; the call may have failed).
            if responses is not None:
                with contextlib.suppress(Exception):
                    responses.cancel()
            raise
        except BackPressureError as error:
            generator.metrics.requests_refused.inc()
            raise EngineBusy("the inference workers' queue is full") from error
        except RayTaskError as error:  # the replica's code raised: a bug there, not a death
            log.error("inference worker failed: %s", error)
            raise GenerationFailed(WORKER_FAILED) from error
        except (RayError, RayServeException) as error:
            log.error("inference worker lost: %s", error)
            raise _ReplicaLost() from error


def _router_holders(handle, version: str) -> set[str] | None:
    """The replicas this process's Serve router knows to hold `version` (None: this Ray
    version keeps its table elsewhere). A replica that answers `holds` may have been picked
    only because the router knew of no holder yet, so `load` reads the router's own table;
    it is not public API (checked with Ray 2.60)."""
    try:
        table = handle._router._asyncio_router.request_router \
            ._multiplexed_model_id_to_replica_ids
    except AttributeError:
        return None
    return {replica.unique_id for replica in table.get(version, ())}


class _ReplicaLost(Exception):
    """The replica serving a reply died or became unreachable."""
