"""The share-ceiling benchmark's quick mode runs end to end on the tiny model."""

from __future__ import annotations

import re

from bench_run import run_bench

LAST_LINE = re.compile(r"constant_share=(\d\.\d{3}) retrieval_share=(\d\.\d{3}) "
                       r"base_share=(\d\.\d{3}) longer_base_share=(\d\.\d{3})")
ROW = re.compile(r"\| (base, >= \d+ tokens|constant|retrieval) \| (\d\.\d{3}) \| .* \| "
                 r"(\d\.\d{3}) \(.*\) \| (\d+) \|")


def test_quick_share_ceiling_on_the_tiny_model(tiny_model_dir, tmp_path):
    done, lines, match = run_bench(
        "share_ceiling.py", ["--quick", "--model", str(tiny_model_dir), "--workdir",
                             str(tmp_path)], LAST_LINE, timeout=600)
    assert all(0.0 <= float(value) <= 1.0 for value in match.groups())
    rows = {found.group(1): found for found in map(ROW.match, lines) if found}
    assert set(rows) == {"constant", "retrieval", "base, >= 0 tokens", "base, >= 16 tokens",
                         "base, >= 32 tokens"}, done.stdout
    # Forcing the base model to write on only adds to its greedy replies.
    assert int(rows["base, >= 32 tokens"].group(4)) >= int(rows["base, >= 0 tokens"].group(4))
    assert float(rows["constant"].group(2)) == float(match.group(1))
