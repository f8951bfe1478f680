"""LOG_FORMAT=json: every log line of a process is one JSON object, and no secret is in it,
not even one that JSON would escape (a quote, a backslash)."""

from __future__ import annotations

import json
import subprocess
import sys

from paths import REPO
from subprocess_env import clean_env

PASSWORD = 'pa"ss\\word-42'
TOKEN = "MTIz.discord-token-value.xyz"
SCRIPT = """
import logging
from bot.core.config import load_settings
from bot.core.logs import configure_logging

configure_logging(load_settings(_env_file=None))
log = logging.getLogger("bot.example")
log.info("connecting with %s and %s", {password!r}, {token!r})
try:
    raise RuntimeError("refused: " + {password!r})
except RuntimeError:
    log.exception("it failed")
log.debug("not shown at INFO")
"""


def run_logging(log_format: str) -> list[str]:
    env = clean_env() | {"LOG_FORMAT": log_format, "DISCORD_TOKEN": TOKEN,
                         "REDIS_URL": "redis://:pa%22ss%5Cword-42@redis.example:6379/0"}
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(password=PASSWORD, token=TOKEN)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def test_json_logs_are_one_object_per_line_without_secrets():
    lines = run_logging("json")
    entries = [json.loads(line) for line in lines]  # every line parses: one object each
    assert [e["message"] for e in entries] == ["connecting with *** and ***", "it failed"]
    assert entries[0]["level"] == "INFO" and entries[0]["logger"] == "bot.example"
    assert entries[0]["time"].endswith("+00:00")
    assert "RuntimeError: refused: ***" in entries[1]["exc"]
    escaped = json.dumps(PASSWORD)[1:-1]
    for line in lines:
        assert PASSWORD not in line and escaped not in line and TOKEN not in line


def test_text_logs_stay_readable_lines():
    lines = run_logging("text")
    assert "INFO bot.example: connecting with *** and ***" in lines[0]
    assert not lines[0].startswith("{")
    assert PASSWORD not in "\n".join(lines) and TOKEN not in "\n".join(lines)
