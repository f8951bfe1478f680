"""The batch-size / threads benchmark's quick mode runs end to end on the tiny model."""

from __future__ import annotations

import re

from bench_run import run_bench

LAST_LINE = re.compile(r"best=(\w+)/(\d+)/(\d+) best_vs_base=(\d+\.\d+) "
                       r"rows_max_vs_mid=(\d+\.\d+) threads_max_vs_1=(\d+\.\d+)")


def test_quick_batch_benchmark(tiny_model_dir):
    done, lines, match = run_bench("batch.py", ["--quick", "--model", str(tiny_model_dir)],
                                   LAST_LINE)
    dtype, rows, threads = match.group(1), int(match.group(2)), int(match.group(3))
    assert dtype in ("float32", "int8") and rows in (2, 4) and threads in (1, 2)
    assert float(match.group(4)) >= 1.0  # the best is at least the baseline it is one of
    # Every configuration has its row: 2 types x 2 batch sizes x 2 thread counts.
    table = [line for line in lines if line.startswith(("float32 ", "int8 "))]
    assert len(table) == 8, lines
