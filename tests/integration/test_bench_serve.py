"""The serving benchmark's quick mode runs end to end on the tiny model."""

from __future__ import annotations

import re

from bench_run import run_bench

LAST_LINE = re.compile(r"ttft_p95_ms=(\d+) p95_ms=(\d+) p95_ratio=(\d+\.\d+) "
                       r"throughput_ratio=(\d+\.\d+) failed=(\d+)")


def test_quick_serving_benchmark_on_the_tiny_model(tiny_model_dir):
    done, lines, match = run_bench("serve.py", ["--quick", "--model", str(tiny_model_dir)],
                                   LAST_LINE)
    ttft, p95, p95_ratio, ratio, failed = match.groups()
    assert failed == "0" and int(p95) >= int(ttft) > 0
    assert float(p95_ratio) > 0 and float(ratio) > 0
    assert any(line.startswith("static ") for line in lines)
    assert any(line.startswith("engine ") for line in lines)
    # The --compare engines (float32, bfloat16, int8 by default) take their turns in the burst.
    for dtype in ("float32", "bfloat16", "int8"):
        assert any(line.startswith(f"engine {dtype} ") for line in lines), lines
    # The adapter loaded midway served the later requests.
    swap = next(line for line in lines if line.startswith("hot swap midway"))
    assert "'bench-v2'" in swap and "'base'" in swap
