"""The load benchmark runs end to end on the tiny model and its private redis-server."""

from __future__ import annotations

import re

from bench_run import run_bench

LAST_LINE = re.compile(r"chats_ok=(\d+)/(\d+) ratings_ok=(\d+)/(\d+) busy=(\d+) lost=(\d+)")


def test_small_load_loses_nothing(tmp_path):
    done, lines, match = run_bench(
        "load.py", ["--chats", "40", "--ratings", "120", "--exchanges", "12"], LAST_LINE,
        cwd=tmp_path)
    chats_ok, chats, ratings_ok, ratings, busy, lost = map(int, match.groups())
    assert (chats, ratings, lost) == (40, 120, 0)
    assert ratings_ok == 120  # the bounded pool waits: no rating fails
    assert chats_ok >= 1 and chats_ok + busy == 40
    assert any(line.startswith("machine: ") for line in lines)
    assert "Traceback" not in done.stderr
