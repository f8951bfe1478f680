"""deploy/'s Prometheus and Grafana agree with the code: Prometheus scrapes each app service on
the METRICS_PORT compose gives it, and every series the dashboard asks for is one the metrics
registry (bot/core/metrics.py) really exposes."""

from __future__ import annotations

import json
import re

import yaml
from paths import REPO

from bot.core.metrics import Metrics

DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "learning-bot.json"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def scrape_jobs() -> dict[str, list[str]]:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    return {job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
            for job in config["scrape_configs"]}


def exposed_series() -> set[str]:
    metrics = Metrics()
    metrics.cycle("rejected", 60.0, "nll")  # the gate's checks appear with their first refusal
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_prometheus_scrapes_the_bot_and_the_trainer_on_their_metrics_port():
    services = compose()["services"]
    jobs = scrape_jobs()
    assert set(jobs) == {"bot", "trainer", "fleet"}
    for name in ("bot", "trainer"):
        port = services[name]["environment"]["METRICS_PORT"]
        assert jobs[name] == [f"{name}:{port}"]


def test_prometheus_scrapes_the_fleet_front_end_and_workers_on_their_metrics_port():
    services = compose()["services"]
    fleet = [name for name, spec in services.items() if spec.get("profiles") == ["fleet"]]
    assert sorted(fleet) == ["bot-fleet", "ray-head", "ray-worker"]
    # ray-head only deploys; the bot and the replicas on the workers generate and report.
    assert scrape_jobs()["fleet"] == [
        f"{name}:{services[name]['environment']['METRICS_PORT']}"
        for name in ("bot-fleet", "ray-worker")]


def test_the_prometheus_service_reads_that_config_and_listens_on_this_host_only():
    prometheus = compose()["services"]["prometheus"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert all(p.startswith("127.0.0.1:") for p in prometheus["ports"])
    grafana = compose()["services"]["grafana"]
    assert grafana["profiles"] == ["dashboards"]
    assert all(p.startswith("127.0.0.1:") for p in grafana["ports"])


def test_every_series_on_the_dashboard_is_exposed():
    exposed = exposed_series()
    queries = dashboard_queries()
    assert len(queries) >= 10
    named = {name for query in queries
             for name in re.findall(r"\b(?:lbot_\w+|process_\w+)", query)}
    assert named and not named - exposed, f"not exposed: {sorted(named - exposed)}"
    jobs = {job for query in queries for job in re.findall(r'job="(\w+)"', query)}
    assert jobs <= set(scrape_jobs())


def test_grafana_provisions_the_dashboard_on_the_prometheus_datasource():
    [source] = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert {p["datasource"]["uid"] for p in panels} == {source["uid"]}
    [provider] = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/learning-bot.yml").read_text())["providers"]
    mounted = {v.split(":")[1] for v in compose()["services"]["grafana"]["volumes"]}
    assert f"{provider['options']['path']}/learning-bot.json" in mounted
