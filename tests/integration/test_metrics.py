"""Prometheus metrics on METRICS_PORT, scraped over HTTP as Prometheus would: the console's
replies, ratings, an adapter swap and a refused adapter, a port that cannot be opened."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

import pytest
from console_session import PipedConsole
from prometheus_client.parser import text_string_to_metric_families
from store_util import TENANT
from waiting import eventually

from bot.core.local_redis import free_port
from bot.core.metrics import Metrics, MetricsPortError
from bot.core.store import AdapterRecord
from bot.runtime import Runtime


def scrape(port: int) -> dict[str, float]:
    """Every sample at http://127.0.0.1:port/metrics, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def test_a_console_run_of_three_replies_shows_three_first_tokens(fast):
    port = free_port()
    console = PipedConsole(fast.model_copy(update={"metrics_port": port}))
    console.say("hello there", "how are you?", "tell me more")
    await eventually(lambda: console.out.getvalue().count("bot [") >= 3, timeout=120)
    console.say("/rate up")
    await console.wait_for("rated the last reply up")
    seen = await asyncio.to_thread(scrape, port)
    assert await console.end() == 0

    assert seen["lbot_time_to_first_token_seconds_count"] == 3
    assert seen["lbot_e2e_request_latency_seconds_count"] == 3
    assert seen["lbot_request_queue_time_seconds_count"] == 3
    # Each reply has at most 8 tokens (fast); each token after a reply's first is one gap,
    # end-of-text included (sampled and timed, but not a reply token): at most one per reply.
    tokens = seen["lbot_generation_tokens_total"]
    assert 3 <= tokens <= 24
    assert tokens - 3 <= seen["lbot_inter_token_latency_seconds_count"] <= tokens
    assert seen["lbot_prompt_tokens_total"] > 3
    assert seen["lbot_num_requests_running"] == 0 and seen["lbot_num_requests_waiting"] == 0
    assert seen["lbot_ratings_total{kind=up}"] == 1
    with pytest.raises(OSError):  # the endpoint closes with the console
        await asyncio.to_thread(scrape, port)


async def test_a_swap_and_a_refused_adapter_are_counted(fast, store, engine, blobs):
    port = free_port()
    async with Runtime(fast.model_copy(update={"metrics_port": port}), store=store,
                       generator=engine):
        before = await asyncio.to_thread(scrape, port)
        assert before["lbot_served_adapters_info{versions=}"] == 1
        registry = store.tenant(TENANT).registry
        good = await registry.save(AdapterRecord(base_model=fast.model_name), blobs["v1"])
        await registry.activate(good.version)
        await eventually(lambda: scrape(port).get("lbot_adapter_swaps_total") == 1)
        bad = await registry.save(AdapterRecord(base_model=fast.model_name), blobs["other"])
        await registry.activate(bad.version)
        await eventually(lambda: scrape(port).get("lbot_adapter_refusals_total") == 1)
        seen = await asyncio.to_thread(scrape, port)
    assert seen["lbot_adapter_loads_total"] == 1  # the refused one never attached
    assert seen["lbot_adapter_swaps_total"] == 1
    assert seen[f"lbot_served_adapters_info{{versions={good.version}}}"] == 1


async def test_a_metrics_port_in_use_is_named(fast, store, engine):
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsPortError, match=f"METRICS_PORT={port} cannot be opened"):
            async with Runtime(fast.model_copy(update={"metrics_port": port}), store=store,
                               generator=engine):
                pass


async def test_the_trainer_counts_its_cycles_by_outcome(settings, store, own, monkeypatch):
    from trainer import schedule
    from trainer.schedule import TrainerService

    metrics = Metrics()
    service = TrainerService(settings.model_copy(update={"search_trials": 1, "max_epochs": 1}),
                             store, metrics)
    await own.trainer.request_training("admin")
    [outcome] = await service.poll_request()
    assert outcome.outcome == "skipped"  # no data

    async def broken(*args, **kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(schedule, "run_cycle", broken)
    await own.trainer.request_training("admin")
    assert await service.poll_request() == []
    value = metrics.registry.get_sample_value
    assert value("lbot_training_cycles_total", {"outcome": "skipped"}) == 1
    assert value("lbot_training_cycles_total", {"outcome": "failed"}) == 1
    assert value("lbot_training_cycle_seconds_count") == 2
    assert value("lbot_gate_refusals_total", {"check": "nll"}) is None


def test_a_refused_candidate_counts_the_check_that_refused_it():
    metrics = Metrics()
    metrics.cycle("rejected", 12.0, "chrf")
    metrics.cycle("promoted", 10.0, None)
    value = metrics.registry.get_sample_value
    assert value("lbot_gate_refusals_total", {"check": "chrf"}) == 1
    assert value("lbot_training_cycles_total", {"outcome": "promoted"}) == 1
