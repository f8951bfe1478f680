"""Runs a benchmark script as a user would and hands back its output lines and fixed last line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from paths import REPO


def run_bench(script: str, args: list[str], last_line: re.Pattern, *, cwd: Path = REPO,
              timeout: int = 300
              ) -> tuple[subprocess.CompletedProcess, list[str], re.Match]:
    """(the finished run, its stdout lines, the match of `last_line` on the last one) of
    `bench/<script> args`."""
    done = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    match = last_line.fullmatch(lines[-1])
    assert match, lines[-1]
    return done, lines, match
