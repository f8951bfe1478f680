"""The int8 benchmark's quick mode runs end to end on the tiny models."""

from __future__ import annotations

import re

from bench_run import run_bench

LAST_LINE = re.compile(r"int8_speedup=(\d+\.\d+) nll_delta=(-?\d+\.\d+) greedy_agree=(\d\.\d+) "
                       r"fp32_tok_s=(\d+\.\d) int8_tok_s=(\d+\.\d)")


def test_quick_int8_benchmark(tiny_model_dir, pretrained_model_dir):
    done, lines, match = run_bench("quantize.py", [
        "--quick", "--model", str(tiny_model_dir), "--pretrained", str(pretrained_model_dir)],
        LAST_LINE)
    speedup, delta, agree, fp32, int8 = map(float, match.groups())
    assert fp32 > 0 and int8 > 0 and abs(speedup - int8 / fp32) < 0.02  # one repeat
    # Scored on both models; int8 stays close to float32 on the pretrained one.
    rows = [line for line in lines if line.startswith(("demo tiny", "speed model"))]
    assert len(rows) == 2, lines
    assert abs(delta) < 0.05 and 0.9 <= agree <= 1.0
