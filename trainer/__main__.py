"""`python -m trainer COMMAND`: the trainer's command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer")
    commands = parser.add_subparsers(dest="command", required=True)
    tiny = commands.add_parser("init-tiny-model", help="write a tiny offline GPT-2 into DIR")
    tiny.add_argument("directory")
    args = parser.parse_args(argv)

    if args.command == "init-tiny-model":
        from trainer.tiny_model import build_tiny_model

        path = build_tiny_model(args.directory)
        print(f"tiny GPT-2 written to {path} (load it with MODEL_NAME={path})")
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
