"""Every entry point, run as an operator would, when Redis is down, refuses the credentials or
the URL is bad: one clear line, a non-zero exit, no traceback and no secret in the output.
`python -m bot run` refuses a missing or weak USER_HASH_SECRET; the console says when it uses
the development value."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
from paths import REPO
from subprocess_env import clean_env

from bot.core.local_redis import LocalRedis, free_port

SECRET = "wrong-s3cret-pw"  # what must never be printed
PASSWORD = "right-pw-0123456789"
STRONG = "3f9c1a7e5b2d8046c1e9a7b3d5f20817"
# The shape of a bot token (Discord would refuse it), so a test reaches what comes after the check.
WELL_FORMED_TOKEN = "MTAxMjM0NTY3ODkwMTIzNDU2Nw.GaBcDe.a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9"


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory):
    """A redis-server that wants PASSWORD."""
    server = LocalRedis(tmp_path_factory.mktemp("locked")).start()
    with redis.Redis(port=server.port) as client:
        client.config_set("requirepass", PASSWORD)
    yield server
    server.close()


def cases(port: int) -> dict[str, str]:
    return {
        "down, password in the query": f"redis://127.0.0.1:{free_port()}/0?password={SECRET}",
        "wrong password": f"redis://:{SECRET}@127.0.0.1:{port}/0",
        "wrong user and password": f"redis://bob:{SECRET}@127.0.0.1:{port}/0",
        "wrong password in the query": f"redis://127.0.0.1:{port}/0?password={SECRET}",
        "no password": f"redis://127.0.0.1:{port}/0",
        "bad port": f"redis://:{SECRET}@127.0.0.1:{SECRET}/0",
    }


def run(args: list[str], tmp_path, stdin: str = "", **env) -> subprocess.CompletedProcess:
    environment = {**clean_env(), "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", *args], input=stdin, env=environment,
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)


def assert_one_clear_line(done: subprocess.CompletedProcess) -> str:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    assert SECRET not in output, output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["bot", "console"], ["bot", "run"]])
@pytest.mark.parametrize("case", list(cases(0)))
def test_bot_fails_with_one_clear_line(locked_redis, tmp_path, command, case):
    url = cases(locked_redis.port)[case]
    done = run(command, tmp_path, REDIS_URL=url, USER_HASH_SECRET=STRONG,
               DISCORD_TOKEN=WELL_FORMED_TOKEN)
    line = assert_one_clear_line(done)
    if case == "bad port":
        assert done.returncode == 2 and "REDIS_URL" in line
    elif case.startswith("down"):
        assert line.startswith(f"{' '.join(command)} failed: cannot reach Redis at "
                               "redis://127.0.0.1:")
        assert "password=***" in line
    else:
        assert "refused the credentials in REDIS_URL" in line


@pytest.mark.parametrize("case", ["down, password in the query", "wrong password in the query"])
def test_the_trainer_fails_with_one_clear_line(locked_redis, tmp_path, case):
    url = cases(locked_redis.port)[case]
    done = run(["trainer", "once", "--guild", "1"], tmp_path, REDIS_URL=url,
               USER_HASH_SECRET=STRONG)
    assert assert_one_clear_line(done).startswith("once failed: ")


@pytest.mark.parametrize("secret", [None, "", "x", "   ", "short-secret", "x" * 40])
def test_bot_run_refuses_a_missing_or_weak_user_hash_secret(tmp_path, secret):
    env = {"DISCORD_TOKEN": WELL_FORMED_TOKEN,
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    if secret is not None:
        env["USER_HASH_SECRET"] = secret
    done = run(["bot", "run"], tmp_path, **env)
    assert done.returncode == 2
    line = assert_one_clear_line(done)
    assert "USER_HASH_SECRET" in line and ("not set" in line or "too weak" in line)


def test_the_console_says_when_it_uses_the_development_secret(settings, tmp_path):
    # Greedy: a sampled reply of the random tiny model was now and then nothing but control
    # characters, and the console then says sorry instead of replying.
    env = {"REDIS_URL": settings.redis_url, "KEY_PREFIX": settings.key_prefix,
           "MODEL_NAME": settings.model_name, "DEVICE": "cpu", "MAX_NEW_TOKENS": "4",
           "TEMPERATURE": "0"}
    done = run(["bot", "console"], tmp_path, stdin="hello\n", **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("bot [base]: ")
    assert "USER_HASH_SECRET is not set" in done.stderr
    assert "development value" in done.stderr
