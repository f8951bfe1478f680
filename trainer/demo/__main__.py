"""`python -m trainer.demo`: see trainer/demo/run.py. The arguments are read first, so `--help`
and a mistyped option answer before torch is imported."""

import sys

from trainer.demo.cli import parse_args

args = parse_args()
from trainer.demo.run import run  # noqa: E402  (heavy: torch, transformers, peft)

sys.exit(run(args))
