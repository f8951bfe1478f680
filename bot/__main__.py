"""`python -m bot run` serves Discord (needs DISCORD_TOKEN); `python -m bot console` chats in
the terminal through the same path, without Discord."""

from __future__ import annotations

import argparse
import logging
import sys

from bot.config import SettingsError, load_settings
from bot.fatal import run_main
from bot.redact import hide_secrets_in_logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="serve Discord (needs DISCORD_TOKEN and USER_HASH_SECRET)")
    sub.add_parser("console", help="chat in the terminal; reads standard input")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
        if args.command == "run":
            settings.require_discord()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hide_secrets_in_logs(settings)

    if args.command == "run":
        from bot.app import run_bot  # imports discord only when serving Discord

        return run_main(run_bot(settings), settings, "bot run", interrupted=0)
    from bot.console import run_console

    if settings.uses_dev_secret:
        print("note: USER_HASH_SECRET is not set, so the console hashes user ids with the "
              "development value (fine for trying it out; `bot run` refuses it)",
              file=sys.stderr)
    return run_main(run_console(settings), settings, "bot console", interrupted=0)


if __name__ == "__main__":
    sys.exit(main())
