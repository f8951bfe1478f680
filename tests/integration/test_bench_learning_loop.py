"""The learning-loop benchmark's quick mode runs end to end on the tiny model."""

from __future__ import annotations

import re

from bench_run import run_bench

LAST_LINE = re.compile(r"import_share=(\d\.\d{3}) base_share=(\d\.\d{3}) sft_share=(\d\.\d{3}) "
                       r"pref_share=(\d\.\d{3}) rounds=1")


def test_quick_learning_loop_on_the_tiny_model(tiny_model_dir, tmp_path):
    done, lines, match = run_bench(
        "learning_loop.py", ["--quick", "--model", str(tiny_model_dir), "--workdir", str(tmp_path)],
        LAST_LINE, timeout=600)
    shares = [float(value) for value in match.groups()]
    assert all(0.0 <= value <= 1.0 for value in shares)
    # The threshold lets about a quarter of the base model's pool replies through (as near as
    # ties allow: the random tiny model scores 0 on most).
    calibration = next(line for line in lines if line.startswith("calibration:"))
    passed = float(re.search(r": (\d\.\d{3}) of the base", calibration).group(1))
    assert 0.1 <= passed <= 0.4, calibration
    # Each loop rated every pool prompt through the actions, taught a third of the 👎, and ran
    # one cycle that the gate decided on.
    for loop in ("sft", "pref"):
        rated = next(line for line in lines if line.startswith(f"{loop} round 1: 👍"))
        up, down, taught = map(int, re.search(r"👍 (\d+) 👎 (\d+) taught (\d+)", rated).groups())
        assert up + down == 48 and taught == down // 3, rated
        assert re.search(r"cycle (promoted|rejected)", rated), rated
    assert any(line.startswith("import: held-out 👍 share") for line in lines)
    assert "| pref round 1 |" in done.stdout
