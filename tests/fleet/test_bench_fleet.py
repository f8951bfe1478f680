"""The fleet benchmark's quick mode runs end to end (its own Ray instance, in its own process)."""

from __future__ import annotations

import re

from bench_run import run_bench

LAST_LINE = re.compile(r"remote_ratio=(\d+\.\d+) ttft_overhead_ms=(-?\d+\.\d) "
                       r"multiplex_hit=(\d\.\d\d) failover_failed=(\d+) recovered_s=(\d+\.\d\d)")


def test_quick_fleet_benchmark_on_the_tiny_model():
    done, lines, match = run_bench("fleet.py", ["--quick"], LAST_LINE, timeout=600)
    ratio, _, hit, failed, _ = match.groups()
    assert float(ratio) > 0 and 0 <= float(hit) <= 1
    assert any(line.startswith("local : burst") for line in lines)
    assert any(line.startswith("remote: burst") for line in lines)
    # Every adapter was warmed on a replica, spread over both.
    spread = next(line for line in lines if line.startswith("adapters per replica"))
    assert spread.endswith("[2, 2]"), spread
    # A failed request is a GenerationFailed (the front end's cut-off note), nothing else.
    failover = next(line for line in lines if line.startswith("failover:"))
    assert ("(GenerationFailed)" in failover) == (int(failed) > 0), failover
