"""Prometheus metrics of one process, served over HTTP on METRICS_PORT (unset: not served).

The serving names follow vLLM's (time_to_first_token_seconds, inter_token_latency_seconds,
e2e_request_latency_seconds, request_queue_time_seconds, num_requests_running/waiting, prompt
and generation token counters), under the `lbot_` prefix so they do not mix with another
exporter's. No metric has a per-server label: the number of servers is unbounded and each label
value is a time series. Each `Metrics` has its own CollectorRegistry, so two runtimes in one
process (tests) never collide.

    metrics = Metrics()
    server = metrics.serve(settings.metrics_port)   # None when the port is unset
    ...
    metrics.close(server)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)

from bot.core.fatal import Fatal

log = logging.getLogger(__name__)

PREFIX = "lbot"
# Seconds. CPU replies of 64 tokens take seconds to tens of seconds; a GPU's take fractions.
_TTFT_BUCKETS = (0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
_ITL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_E2E_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
RATING_KINDS = ("up", "down", "correction")
CYCLE_OUTCOMES = ("promoted", "rejected", "skipped", "failed")
_CYCLE_BUCKETS = (1.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 2400.0, 4800.0)


class MetricsPortError(Fatal):
    """METRICS_PORT cannot be opened (in use, or not allowed); the message names it."""


class Metrics:
    """Every metric of the bot and the trainer, in one private registry (see the module
    docstring). A process exports only what it uses; the others stay at zero."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The process's memory, CPU and garbage collection (process_resident_memory_bytes...).
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        r, p = self.registry, PREFIX
        # --- generation (the engine's scheduler) ---
        self.time_to_first_token = Histogram(
            f"{p}_time_to_first_token_seconds", "From a request's submission to its first "
            "reply token", buckets=_TTFT_BUCKETS, registry=r)
        self.inter_token_latency = Histogram(
            f"{p}_inter_token_latency_seconds", "Between two reply tokens of one request",
            buckets=_ITL_BUCKETS, registry=r)
        self.e2e_request_latency = Histogram(
            f"{p}_e2e_request_latency_seconds", "From a request's submission to its last token",
            buckets=_E2E_BUCKETS, registry=r)
        self.request_queue_time = Histogram(
            f"{p}_request_queue_time_seconds", "From a request's submission to its admission "
            "into the running batch", buckets=_TTFT_BUCKETS, registry=r)
        self.requests_running = Gauge(f"{p}_num_requests_running",
                                      "Requests decoding in the running batch", registry=r)
        self.requests_waiting = Gauge(f"{p}_num_requests_waiting", "Requests queued, or "
                                      "waiting for their adapter to load", registry=r)
        self.prompt_tokens = Counter(f"{p}_prompt_tokens", "Prompt tokens of finished "
                                     "requests", registry=r)
        self.generation_tokens = Counter(f"{p}_generation_tokens", "Reply tokens of finished "
                                         "requests", registry=r)
        self.requests_refused = Counter(f"{p}_requests_refused", "Requests turned away because "
                                        "the queue was full (QUEUE_MAX)", registry=r)
        self.requests_failed = Counter(f"{p}_requests_failed", "Requests that ended with a "
                                       "generation failure", registry=r)
        # --- adapters ---
        self.adapter_loads = Counter(f"{p}_adapter_loads", "Adapters attached to the model",
                                     registry=r)
        self.adapter_swaps = Counter(f"{p}_adapter_swaps", "Changes of the version serving "
                                     "a server (publish, rollback)", registry=r)
        self.adapter_refusals = Counter(f"{p}_adapter_refusals", "Times an adapter version was "
                                        "refused (damaged, failed a check): not served", registry=r)
        self.served_versions = Info(f"{p}_served_adapters", "The adapter versions this "
                                    "process serves (comma-separated)", registry=r)
        # --- moderators ---
        self.ratings = Counter(f"{p}_ratings", "Moderator acts on replies", ["kind"],
                               registry=r)
        # --- trainer ---
        self.training_cycles = Counter(f"{p}_training_cycles", "Training cycles by outcome",
                                       ["outcome"], registry=r)
        self.gate_refusals = Counter(f"{p}_gate_refusals", "Candidates the gate refused, by "
                                     "the check that refused them", ["check"], registry=r)
        self.training_cycle_seconds = Histogram(
            f"{p}_training_cycle_seconds", "Duration of a training cycle",
            buckets=_CYCLE_BUCKETS, registry=r)
        # Known label values start at 0, so a rate over them exists before the first event.
        for kind in RATING_KINDS:
            self.ratings.labels(kind=kind)
        for outcome in CYCLE_OUTCOMES:
            self.training_cycles.labels(outcome=outcome)

    # --- what the parts call ----------------------------------------------------------------

    def watch_queue(self, running: Callable[[], int], waiting: Callable[[], int]) -> None:
        """Read the running and waiting counts from the generator at each scrape."""
        self.requests_running.set_function(running)
        self.requests_waiting.set_function(waiting)

    def serving(self, versions: Iterable[str]) -> None:
        self.served_versions.info({"versions": ",".join(sorted(set(versions)))})

    def cycle(self, outcome: str, seconds: float, failed_check: str | None = None) -> None:
        self.training_cycles.labels(outcome=outcome).inc()
        self.training_cycle_seconds.observe(seconds)
        if outcome == "rejected" and failed_check:
            self.gate_refusals.labels(check=failed_check).inc()

    # --- the HTTP endpoint ------------------------------------------------------------------

    def serve(self, port: int | None):
        """Serve /metrics on `port` on every interface (None: nothing); the server to close.
        Raises MetricsPortError naming METRICS_PORT when the port cannot be opened."""
        if port is None:
            return None
        try:
            server, _ = start_http_server(port, registry=self.registry)
        except OSError as error:
            raise MetricsPortError(f"METRICS_PORT={port} cannot be opened: "
                                   f"{error.strerror or error}") from None
        log.info("Prometheus metrics on port %d at /metrics", port)
        return server

    @staticmethod
    def close(server) -> None:
        if server is not None:
            server.shutdown()
            server.server_close()
