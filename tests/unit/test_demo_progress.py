"""The demo's pretraining says how far it is when its output goes to a file (no progress bar
shows there): a line at most every 30 s, and one at the last step."""

from __future__ import annotations

import io

from trainer.demo.prepare import ProgressLines


def test_progress_lines_come_every_interval_and_at_the_end():
    now = [0.0]
    out = io.StringIO()
    lines = ProgressLines(100, every_s=30.0, out=out, clock=lambda: now[0])
    for step in range(1, 101):
        now[0] = step * 1.0  # one second a step
        lines.step(step, 5.0 - step / 100)
    printed = out.getvalue().splitlines()
    assert printed == ["  pretraining: step 30/100, loss 4.70, 30 s",
                       "  pretraining: step 60/100, loss 4.40, 60 s",
                       "  pretraining: step 90/100, loss 4.10, 90 s",
                       "  pretraining: step 100/100, loss 4.00, 100 s"]
