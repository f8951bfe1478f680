"""The soak benchmark runs end to end, bounded, on the tiny model: replies, one swap, and its
fixed last line with the RSS figures."""

from __future__ import annotations

import re

from bench_run import run_bench

LAST_LINE = re.compile(r"rss_start_mb=([\d.]+) rss_end_mb=([\d.]+) "
                       r"rss_slope_mb_per_100_replies=(-?[\d.]+|nan) replies=(\d+) swaps=(\d+)")


def test_a_short_soak_replies_swaps_once_and_reports_its_memory(tmp_path):
    done, lines, match = run_bench(
        "soak.py", ["--minutes", "0.3", "--sample-seconds", "2", "--max-new-tokens", "8",
                    "--gc"], LAST_LINE, cwd=tmp_path)
    start, end = float(match.group(1)), float(match.group(2))
    replies, swaps = int(match.group(4)), int(match.group(5))
    assert replies >= 2 and swaps == 1
    assert 50 < start < 4000 and 50 < end < 4000  # MiB of a process holding a model
    assert any(line.startswith("machine: ") for line in lines)
    assert any("swapped in adapter v1" in line for line in lines)
    assert sum(1 for line in lines if re.match(r"\s+t=\s*\d+ s\s+replies=", line)) >= 2
    assert "Traceback" not in done.stderr


def test_the_slope_is_fitted_after_the_warm_up():
    import sys

    from paths import REPO

    sys.path.insert(0, str(REPO / "bench"))
    from soak import slope_per_100

    # The warm-up (first quarter) jumps 100 MiB; afterwards 1 MiB per 10 replies.
    samples = [(0, 0, 100.0)] + [(t, 10 * t, 200.0 + t) for t in range(1, 12)]
    assert abs(slope_per_100(samples) - 10.0) < 1e-9
    assert str(slope_per_100([(0, 5, 1.0)])) == "nan"
