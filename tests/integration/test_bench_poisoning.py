"""The poisoning benchmark's quick mode runs end to end on the tiny model."""

from __future__ import annotations

import re

from bench_run import run_bench

LAST_LINE = re.compile(r"spam_replies_max=(\d+) honest_share=(\d\.\d{3}) "
                       r"base_share=(\d\.\d{3}) rounds=1")


def test_quick_poisoning_bench_on_the_tiny_model(tiny_model_dir, tmp_path):
    done, lines, match = run_bench(
        "poisoning.py", ["--quick", "--model", str(tiny_model_dir), "--workdir", str(tmp_path)],
        LAST_LINE, timeout=600)
    spam_max, honest, base = int(match.group(1)), float(match.group(2)), float(match.group(3))
    assert spam_max == 0 and 0.0 <= honest <= 1.0 and 0.0 <= base <= 1.0
    rated = next(line for line in lines if line.startswith("k10x2 round 1: honest"))
    # The spammer's ten adverts carry a link: every one is held for review, none trains.
    assert "spam taught 10" in rated and "'held': 10" in rated, rated
    assert any(re.match(r"k10x2 round 1: cycle (promoted|rejected|skipped)", line)
               for line in lines)
    assert "| k10x2 | 1 |" in done.stdout
