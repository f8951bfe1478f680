"""A trainer process killed in the middle of training publishes nothing; the next one runs.

`python -m trainer once` runs as a real subprocess against the test Redis and gets SIGKILL as
soon as it logs that training started.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

from store_util import TENANT, raw_redis
from subprocess_env import settings_env

from bot.core.store import BASE_VERSION, Exchange

LOCK_TTL = 5  # the smallest TRAIN_LOCK_TTL_SECONDS allowed


def trainer_env(settings, **extra) -> dict:
    env = settings_env(settings, TRAIN_LOCK_TTL_SECONDS=LOCK_TTL, MIN_NEW_RATINGS=0,
                       SEARCH_LR_MIN=0.005, SEARCH_LR_MAX=0.02, LOG_LEVEL="INFO", **extra)
    env.pop("PYTHONPATH", None)
    return env


def wait_for_line(process: subprocess.Popen, marker: str, timeout_s: float) -> list[str]:
    """Read stderr until a line holds `marker`; returns the lines read."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break  # the process ended without the marker
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"no {marker!r} line; stderr so far:\n{''.join(seen)}")


async def test_killed_cycle_publishes_nothing_and_the_lock_expires(settings, store, tmp_path, own):
    for n in range(30):
        exchange = await store.exchanges.add(Exchange(tenant=TENANT,
                                                      user_message=f"say hello ({n})",
                                                      reply="hello there"))
        await store.exchanges.rate(exchange.id, "moderator", 1)

    # Many long trials, so the kill surely lands while it trains.
    slow = trainer_env(settings, SEARCH_TRIALS=6, MAX_EPOCHS=50, EARLY_STOP_PATIENCE=50)
    process = subprocess.Popen([sys.executable, "-m", "trainer", "once"], cwd=tmp_path,
                               env=slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        await asyncio.to_thread(wait_for_line, process, "trainer.candidate: training:", 120)
        process.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(process.wait, 30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
        process.stdout.close()

    assert await own.registry.active() == BASE_VERSION
    assert await own.registry.records() == []
    assert (await own.trainer.snapshot()).cursor == "0-0"
    assert await own.trainer.recent_runs() == []
    # held by the dead process, for now
    assert await raw_redis(store).exists(store.keys("g", TENANT, "tr", "lock"))

    # Once the TTL ran out the next trainer starts clean and finishes the job.
    deadline = time.monotonic() + LOCK_TTL + 5
    lock = store.keys("g", TENANT, "tr", "lock")
    while await raw_redis(store).exists(lock) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    quick = trainer_env(settings, SEARCH_TRIALS=1, MAX_EPOCHS=2)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "trainer", "once", "--json"], cwd=tmp_path,
        env=quick, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary) == {"outcome", "reason", "guild", "version", "val_loss", "gate", "data",
                            "learning_rate", "batch_size", "trials", "learned"}
    assert summary["learned"]["headline"]
    # The gate's numbers: these liked replies were written by the base model itself, so they
    # are no chrF references (greedy decoding hands the base its own words back).
    assert summary["gate"]["prompts"] == 0 and summary["gate"]["failed"] is None
    assert summary["gate"]["nll_candidate"] == round(summary["val_loss"]["candidate"], 4)
    assert summary["data"]["positives"] == 30
    assert summary["guild"] == TENANT  # HOME_GUILD_ID: no --guild needed
    assert summary["outcome"] == "promoted", summary
    assert summary["version"] == "v1" and summary["trials"] == 1
    assert summary["val_loss"]["candidate"] < summary["val_loss"]["base"]
    assert await own.registry.active() == "v1"
    assert (await own.trainer.snapshot()).cursor == (await own.trainer.snapshot()).newest_event
