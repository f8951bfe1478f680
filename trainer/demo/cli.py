"""The demo's command line, read before anything heavy is imported, so `--help` answers at once."""

from __future__ import annotations

import argparse

DESCRIPTION = """`make demo` (`python -m trainer.demo`): the whole loop offline, no Discord token,
no internet. Import sample dialogues -> chat through the console twin (style, ratings, a taught
reply) -> one training cycle (search, gate, publish) while the chat goes on -> the engine
hot-swaps the new adapter -> the same questions answered before and after, with the numbers."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.demo", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run (fewer questions, trials and epochs)")
    parser.add_argument("--workdir", default=".demo",
                        help="where the tiny model and the reports go (default .demo)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the demo's keys in Redis instead of removing them")
    parser.add_argument("--json", action="store_true",
                        help="end with one JSON line: outcome, answers before and after")
    return parser.parse_args(argv)
