"""Starts an operator can read: a malformed token, a missing MODEL_NAME, a Redis that may evict
keys or is full each give one line before the model loads; cheap commands import nothing
heavy; `bot --version` and `bot check`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
from paths import REPO
from redis.exceptions import OutOfMemoryError
from subprocess_env import clean_env, settings_env

from bot.core.fatal import Fatal
from bot.core.local_redis import LocalRedis
from bot.core.store import Store, StoreError
from bot.runtime import Runtime

STRONG = "3f9c1a7e5b2d8046c1e9a7b3d5f20817"


def run(args: list[str], env: dict, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env={**env, "PYTHONPATH": str(REPO)},
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def one_line(done: subprocess.CompletedProcess) -> str:
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in output, output
    lines = [line for line in output.splitlines()
             if line.strip() and not line.startswith("note: USER_HASH_SECRET")]
    assert len(lines) == 1, output
    return lines[0]


def test_bot_run_with_a_malformed_token_says_so_before_anything_else(tmp_path):
    # Redis down and no model: only a check made before both can name the token.
    env = {**clean_env(), "DISCORD_TOKEN": "abc", "USER_HASH_SECRET": STRONG,
           "REDIS_URL": "redis://127.0.0.1:1/0", "MODEL_NAME": "/no/such/dir"}
    line = one_line(run(["-m", "bot", "run"], env, tmp_path))
    assert "DISCORD_TOKEN is not a Discord bot token" in line and "abc" not in line


def test_a_missing_model_directory_is_named(settings, tmp_path):
    env = settings_env(settings, MODEL_NAME=str(tmp_path / "no-such-dir"))
    line = one_line(run(["-m", "bot", "console"], env, tmp_path))
    assert line.startswith("bot console failed: MODEL_NAME=") and "is no directory" in line


async def test_the_discord_login_comes_before_the_model(settings, tmp_path):
    async def refused_login():
        raise Fatal("Discord refused DISCORD_TOKEN")

    missing = settings.model_copy(update={"model_name": str(tmp_path / "none")})
    with pytest.raises(Fatal, match="refused DISCORD_TOKEN"):
        async with Runtime(missing, preflight=refused_login):
            pass


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
async def test_a_redis_that_evicts_keys_is_refused(redis_server, settings, policy):
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("maxmemory-policy", policy)
    store = Store.from_settings(settings)
    try:
        with pytest.raises(StoreError, match=f"maxmemory-policy is {policy}.*noeviction"):
            await store.ping()
    finally:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.close()
        await store.close()
    store = Store.from_settings(settings)
    try:
        await store.ping()  # noeviction passes
    finally:
        await store.close()


def test_a_full_redis_at_first_start_gives_one_line(settings, tmp_path):
    (tmp_path / "full").mkdir()
    with LocalRedis(tmp_path / "full") as server:
        with redis.Redis.from_url(server.url) as client:
            client.config_set("maxmemory", "2mb")
            with pytest.raises(OutOfMemoryError):
                for i in range(10_000):
                    client.set(f"filler:{i}", b"x" * 1024)
        env = settings_env(settings, REDIS_URL=server.url)
        line = one_line(run(["-m", "bot", "console"], env, tmp_path))
    # The address is shown (it holds no credentials), and what to do.
    assert line.startswith(f"bot console failed: Redis at {server.url} is full")
    assert "maxmemory" in line


def test_cheap_commands_import_nothing_heavy(tmp_path):
    code = ("import sys, trainer.cycle, trainer.__main__, trainer.demo.cli, bot.__main__; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'matplotlib') "
            "if m in sys.modules))")
    assert run(["-c", code], clean_env(), tmp_path).stdout.strip() == "[]"
    done = run(["-m", "trainer.demo", "--help"], clean_env(), tmp_path)
    assert done.returncode == 0 and "--quick" in done.stdout


def test_version_and_check(settings, tmp_path):
    done = run(["-m", "bot", "--version"], clean_env(), tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("python -m bot "), done
    done = run(["-m", "bot", "check"], settings_env(settings), tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["settings", "redis",
                                                                         "model"]
    env = settings_env(settings, MODEL_NAME=str(tmp_path / "none"))
    done = run(["-m", "bot", "check"], env, tmp_path)
    assert done.returncode == 1 and done.stderr.startswith("bot check failed: MODEL_NAME=")
