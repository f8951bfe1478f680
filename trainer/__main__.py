"""`python -m trainer COMMAND`: the trainer's command line."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer")
    commands = parser.add_subparsers(dest="command", required=True)
    tiny = commands.add_parser("init-tiny-model", help="write a tiny offline GPT-2 into DIR")
    tiny.add_argument("directory")
    commands.add_parser("run", help="train on a schedule (TRAIN_INTERVAL_MINUTES) until stopped")
    once = commands.add_parser("once", help="run one training cycle now and print its outcome")
    which = once.add_mutually_exclusive_group()
    which.add_argument("--guild", type=int, default=None,
                       help="the server to train (default: HOME_GUILD_ID)")
    which.add_argument("--all", action="store_true", help="each server that is due")
    once.add_argument("--json", action="store_true",
                      help="end with each outcome as one JSON line")
    once.add_argument("--force", action="store_true",
                      help="train even when fewer than MIN_NEW_RATINGS new ratings arrived")
    importing = commands.add_parser("import", help="store prompt/reply pairs from a JSON or "
                                                   "JSON lines FILE as positively rated")
    importing.add_argument("file")
    importing.add_argument("--guild", type=int, default=None,
                           help="the server whose data they become (default: HOME_GUILD_ID)")
    export = commands.add_parser("export", help="write a server's adapter (default: its "
                                                "active one) as a safetensors FILE")
    export.add_argument("file")
    export.add_argument("--version", default=None, help="the version to write")
    publish = commands.add_parser("publish", help="bring an adapter FILE into service for a "
                                                  "server, through the adapter checks and gate")
    publish.add_argument("file")
    for command in (export, publish):
        command.add_argument("--guild", type=int, default=None,
                             help="the server (default: HOME_GUILD_ID)")
    args = parser.parse_args(argv)

    if args.command == "init-tiny-model":
        from trainer.demo.tiny_model import build_tiny_model

        path = build_tiny_model(args.directory)
        print(f"tiny GPT-2 written to {path} (load it with MODEL_NAME={path})")
        return 0
    from bot.core.config import SettingsError, get_settings
    from bot.core.fatal import run_main
    from bot.core.logs import configure_logging

    try:
        settings = get_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    configure_logging(settings)
    commands_run = {"run": _serve, "once": _once, "import": _import, "export": _transfer,
                    "publish": _transfer}
    # One clear line and exit status 1 on failure (no secret; the traceback only at DEBUG).
    return run_main(commands_run[args.command](settings, args), settings, args.command)


async def _serve(settings, args) -> int:
    from trainer.schedule import serve

    await serve(settings)
    return 0


def _guild(settings, args) -> int | None:
    """The server a command acts on: --guild, else HOME_GUILD_ID (None: say so and stop)."""
    guild = args.guild if args.guild is not None else settings.home_guild_id
    if guild is None:
        print(f"{args.command}: name the server with --guild ID (or set HOME_GUILD_ID)",
              file=sys.stderr)
    return guild


async def _once(settings, args) -> int:
    from bot.core.store import Store
    from trainer.cycle import due_tenants, run_cycle

    guild = None if args.all else _guild(settings, args)
    if guild is None and not args.all:
        return 2
    store = Store.from_settings(settings)
    try:
        await store.ping()
        guilds = await due_tenants(settings, store) if args.all else [guild]
        outcomes = [await run_cycle(settings, store, g, force=args.force,
                                    progress=not args.json) for g in guilds]
    finally:
        await store.close()
    if not outcomes:
        print("no server is due for training")
    for outcome in outcomes:
        _print_outcome(outcome, args.json)
    return 0


def _print_outcome(outcome, as_json: bool) -> None:
    losses = ", ".join(f"{k} {v:.4f}" for k, v in outcome.val_loss.items() if v is not None)
    print(f"server {outcome.guild}: {outcome.outcome}: {outcome.reason}")
    if outcome.version:
        print(f"version: {outcome.version}")
    if losses:
        print(f"validation loss: {losses}")
    if outcome.gate:
        print("gate: " + ", ".join(f"{k} {v}" for k, v in outcome.gate.items()
                                   if k != "samples" and v is not None))
    if outcome.learning_rate is not None:
        print(f"learning rate {outcome.learning_rate:.3g}, batch size {outcome.batch_size}, "
              f"{outcome.trials} trial(s)")
    if outcome.png_path:
        print(f"report: {outcome.report_path} (loss curve {outcome.png_path})")
    if as_json:
        print(json.dumps(outcome.summary()))


async def _import(settings, args) -> int:
    from bot.core.store import Store
    from trainer.importer import ImportRejected, import_file

    guild = _guild(settings, args)
    if guild is None:
        return 2
    store = Store.from_settings(settings)
    try:
        await store.ping()
        result = await import_file(store.tenant(guild), args.file, settings)
    except ImportRejected as rejected:
        print(rejected, file=sys.stderr)
        return 1
    finally:
        await store.close()
    print(f"imported {result.stored} pair(s) from {args.file} into server {guild}; "
          f"{result.duplicates} duplicate(s) skipped")
    return 0


async def _transfer(settings, args) -> int:
    from trainer.transfer import run_command

    guild = _guild(settings, args)
    return 2 if guild is None else await run_command(settings, args, guild)


if __name__ == "__main__":
    sys.exit(main())
