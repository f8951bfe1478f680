"""The load benchmark runs end to end on the tiny model and its private redis-server."""

from __future__ import annotations

import re
import subprocess
import sys

from paths import REPO as ROOT

LAST_LINE = re.compile(r"chats_ok=(\d+)/(\d+) ratings_ok=(\d+)/(\d+) busy=(\d+) lost=(\d+)")


def test_small_load_loses_nothing(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--chats", "40",
                           "--ratings", "120", "--exchanges", "12"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    match = LAST_LINE.fullmatch(lines[-1])
    assert match, lines[-1]
    chats_ok, chats, ratings_ok, ratings, busy, lost = map(int, match.groups())
    assert (chats, ratings, lost) == (40, 120, 0)
    assert ratings_ok == 120  # the bounded pool waits: no rating fails
    assert chats_ok >= 1 and chats_ok + busy == 40
    assert any(line.startswith("machine: ") for line in lines)
    assert "Traceback" not in done.stderr
