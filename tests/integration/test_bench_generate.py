"""The generation benchmark's quick mode runs end to end on the tiny model."""

from __future__ import annotations

import re

from bench_run import run_bench

LAST_LINE = re.compile(r"throughput_ratio=(\d+\.\d+) p95_engine_ms=(\d+) p50_baseline_ms=(\d+) "
                       r"failed_during_swap=(\d+) mixed_ratio=(\d+\.\d+)")


def test_quick_benchmark_on_the_tiny_model(tiny_model_dir):
    done, lines, match = run_bench("generate.py", ["--quick", "--model", str(tiny_model_dir)],
                                   LAST_LINE)
    ratio, p95_engine, p50_baseline, failed, mixed = match.groups()
    assert failed == "0"
    assert float(ratio) > 0 and int(p95_engine) > 0 and int(p50_baseline) > 0
    assert float(mixed) > 0
    # The mixed run spread its requests over 4 adapters in one model call.
    mixed_line = next(line for line in lines if line.startswith("mixed  adapter run"))
    assert "in 1 model call(s), 4 version(s)" in mixed_line
    # The table shows both approaches, and the swap served requests with the new adapter.
    assert any(line.startswith("engine ") for line in lines)
    assert any(line.startswith("baseline ") for line in lines)
    swap_line = next(line for line in lines if line.startswith("swap idle"))
    assert "bench-v1" in swap_line
