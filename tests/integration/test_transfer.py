"""`python -m trainer export | publish`: an adapter leaves one server as its safetensors file and
enters another through the adapter checks and, where that server has rated data, the gate; a
training cycle's candidate passes the same checks before it publishes. Real Redis, tiny GPT-2,
training, and the command line in a child process."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from bad_adapters import collapsing
from lively import build_lively
from store_util import TENANT
from subprocess_env import settings_env

from bot.core.generation import BASE_VERSION
from bot.core.store import AdapterRecord, Exchange
from bot.engine.engine import Engine
from trainer.cycle import run_cycle
from trainer.transfer import TransferRefused, export_file, publish_file

OTHER = 2  # the server an adapter is brought into
QA = [("what is the capital of france", "paris is the capital of france"),
      ("how are you", "i am fine thank you"),
      ("what color is the sky", "the sky is blue"),
      ("say hello", "hello there"),
      ("what is two plus two", "two plus two is four")]
# The NLL side of the gate only, few trials (tests/integration/test_trainer_cycle.py says why).
QUICK = {"search_trials": 1, "max_epochs": 3, "search_lr_min": 5e-3, "search_lr_max": 2e-2,
         "min_new_ratings": 0, "max_new_tokens": 12, "gate_max_prompts": 0}


async def add_rated(store, tenant: int, count: int, reply: str | None = None) -> None:
    for n in range(count):
        question, answer = QA[n % len(QA)]
        exchange = await store.exchanges.add(Exchange(tenant=tenant,
                                                      user_message=f"{question} ({n})",
                                                      reply=reply or answer))
        await store.exchanges.rate(exchange.id, "moderator", 1)


async def save(own, settings, blob: bytes) -> str:
    record = await own.registry.save(AdapterRecord(base_model=settings.model_name), blob)
    await own.registry.activate(record.version)
    return record.version


def trainer_command(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], env=settings_env(settings),
                          capture_output=True, text=True, timeout=180)


async def test_export_then_publish_brings_the_same_bytes_into_another_server(settings, store,
                                                                             own, blobs,
                                                                             tmp_path):
    v1 = await save(own, settings, blobs["v1"])
    path = tmp_path / "v1.safetensors"

    exported = await export_file(own, None, path)  # the active one
    assert exported.version == v1 and path.read_bytes() == blobs["v1"]

    published = await publish_file(settings, store.tenant(OTHER), path)
    other = store.tenant(OTHER).registry
    assert await other.active() == published.version != v1
    assert published.parent == BASE_VERSION and published.tenant == OTHER
    assert published.sha256 == hashlib.sha256(blobs["v1"]).hexdigest()
    assert published.data == {"published_from": "v1.safetensors"}
    report, _ = await other.report(published.version)
    assert report["reason"] == "the adapter checks passed; no rated data to gate on"
    engine = Engine.from_settings(settings, other.blob)
    try:
        await engine.load(published.version)
    finally:
        await engine.close()
    assert await own.registry.active() == v1  # the source server is left alone


async def test_export_refuses_what_is_not_the_servers_own(settings, store, own, blobs, tmp_path):
    path = tmp_path / "out.safetensors"
    with pytest.raises(TransferRefused, match=f"server {TENANT} has no adapter of its own"):
        await export_file(own, None, path)
    theirs = await save(store.tenant(OTHER), settings, blobs["v2"])
    with pytest.raises(TransferRefused, match=f"adapter {theirs} belongs to another server"):
        await export_file(own, theirs, path)
    with pytest.raises(TransferRefused, match="no adapter version 'v99'"):
        await export_file(own, "v99", path)
    assert not path.exists() and not (tmp_path / "out.safetensors.partial").exists()


async def test_publish_gates_on_the_servers_data(settings, store, own, blobs, tmp_path):
    """Trained on one server, the adapter beats the base model on another with the same kind of
    data and is published there; a random adapter is refused by the gate, nothing changed."""
    quick = settings.model_copy(update=QUICK)
    await add_rated(store, TENANT, 40)
    trained = await run_cycle(quick, store, TENANT, force=True, progress=False)
    assert trained.outcome == "promoted", trained.reason
    path = tmp_path / "trained.safetensors"
    await export_file(own, None, path)
    await add_rated(store, OTHER, 40)
    other = store.tenant(OTHER)

    random = tmp_path / "random.safetensors"
    random.write_bytes(blobs["v2"])
    with pytest.raises(TransferRefused, match="^refused by the gate: "):
        await publish_file(quick, other, random)
    assert await other.registry.active() == BASE_VERSION and not await other.registry.records()

    published = await publish_file(quick, other, path)
    assert await other.registry.active() == published.version
    gate = published.metrics["gate"]
    assert gate["failed"] is None and gate["nll_candidate"] < gate["nll_base"]
    report, _ = await other.registry.report(published.version)
    assert "candidate beats the base model: " in report["reason"]


async def test_a_cycles_candidate_that_collapses_is_refused_before_it_publishes(settings,
                                                                                store, own,
                                                                                tmp_path):
    """Taught to say one word (one token: " help") over and over, the adapter passes the NLL
    gate; the probe (on a base model that does not repeat itself) refuses it, and nothing is
    published."""
    lively = build_lively(tmp_path / "lively")
    quick = settings.model_copy(update={**QUICK, "model_name": str(lively)})
    await add_rated(store, TENANT, 40, reply=" ".join(["help"] * 12))

    # The gate's forgetting check is the first to see it: general text got much less likely.
    outcome = await run_cycle(quick, store, TENANT, force=True, progress=False)
    assert outcome.outcome == "rejected" and outcome.gate["failed"] == "forgetting", outcome
    # With that check out of the way, the adapter checks before publishing refuse it too.
    lenient = quick.model_copy(update={"gate_forget_nats": 100.0})
    outcome = await run_cycle(lenient, store, TENANT, force=True, progress=False)

    assert outcome.outcome == "rejected"
    assert outcome.reason.startswith("refused by the adapter checks: degenerate text: ")
    assert outcome.gate["failed"] == "sanity"
    assert await own.registry.active() == BASE_VERSION and not await own.registry.records()


async def test_the_command_line_round_trip_and_a_refused_file(settings, store, own, blobs,
                                                              tmp_path):
    v1 = await save(own, settings, blobs["v1"])
    path = tmp_path / "v1.safetensors"
    done = trainer_command(settings, "export", "--guild", str(TENANT), str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {v1} of server {TENANT} to {path} (")

    done = trainer_command(settings, "publish", str(path), "--guild", str(OTHER))
    assert done.returncode == 0, done.stderr
    version = await store.tenant(OTHER).registry.active()
    assert done.stdout.strip() == f"published {path} as {version} of server {OTHER} (was base)"

    bad = tmp_path / "nan.safetensors"
    raw = bytearray(blobs["v1"])
    raw[-4:] = b"\x00\x00\xc0\x7f"  # the last float32 weight becomes NaN
    bad.write_bytes(bytes(raw))
    done = trainer_command(settings, "publish", str(bad), "--guild", str(OTHER))
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("publish: refused: non-finite weights: ")
    assert await store.tenant(OTHER).registry.active() == version
    assert len(await store.tenant(OTHER).registry.records()) == 1


async def test_a_file_the_probe_refuses_is_one_line_on_the_command_line(settings, store,
                                                                        tmp_path):
    """Refused after the model is loaded and the adapter attached: still one line."""
    lively = build_lively(tmp_path / "lively")
    path = tmp_path / "collapse.safetensors"
    path.write_bytes(collapsing(lively, settings))
    done = trainer_command(settings.model_copy(update={"model_name": str(lively)}),
                           "publish", str(path), "--guild", str(OTHER))
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("publish: refused: degenerate text: every probe prompt gets token ")
    assert line.endswith(" over and over")
    assert await store.tenant(OTHER).registry.active() == BASE_VERSION
