"""`python -m bot run` serves Discord (needs DISCORD_TOKEN); `python -m bot console` chats in
the terminal through the same path, without Discord; `python -m bot servers` holds the
operator's acts across servers; `python -m bot sync` registers the slash commands with Discord
(on demand: `run` never does) and `python -m bot commands --json` prints what it would send;
`python -m bot check` checks the settings, Redis and MODEL_NAME without serving; `python -m bot
worker` serves the model to other processes as inference workers on Ray Serve (GENERATOR=ray in
the front ends; needs the `fleet` extra)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys

from bot.core.config import SettingsError, check_token_format, load_settings
from bot.core.fatal import run_main
from bot.core.logs import configure_logging


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="check the settings, Redis (reachable, schema, eviction "
                                 "policy) and that MODEL_NAME is there, then exit")
    sub.add_parser("run", help="serve Discord (needs DISCORD_TOKEN and USER_HASH_SECRET)")
    sub.add_parser("worker", help="serve the model as inference workers on Ray Serve "
                                  "(RAY_ADDRESS, WORKER_REPLICAS; front ends set GENERATOR=ray)")
    console = sub.add_parser("console", help="chat in the terminal; reads standard input")
    console.add_argument("--guild", type=int, default=None,
                         help="the server to act in (default: HOME_GUILD_ID, else 0)")
    console.add_argument("--channel", type=int, default=0, help="the channel (default 0)")
    console.add_argument("--user", default="console-user",
                         help='who is talking (default "console-user")')
    sync = sub.add_parser("sync", help="register the slash commands with Discord (needs "
                                       "DISCORD_TOKEN); run it when commands change")
    sync.add_argument("--guild", type=int, default=None,
                      help="copy the commands to this one server only (they show at once; for "
                           "testing) instead of every server")
    sync.add_argument("--clear", action="store_true",
                      help="remove the commands (from --guild's server, else globally)")
    listing = sub.add_parser("commands", help="the commands a sync would register, without "
                                              "connecting to anything")
    listing.add_argument("--json", action="store_true",
                         help="print the JSON list a sync sends (Discord's command payloads)")
    servers = sub.add_parser("servers", help="operator acts across servers")
    acts = servers.add_subparsers(dest="act", required=True)
    acts.add_parser("list", help="every server with data: adapter, default, numbers")
    default = acts.add_parser("default", help="make a server's adapter the default one")
    default.add_argument("guild", type=int)
    wipe = acts.add_parser("wipe", help="delete everything of one server")
    wipe.add_argument("guild", type=int)
    wipe.add_argument("--yes", action="store_true", help="really delete")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        if args.command == "run":
            settings.require_discord()
        if args.command == "sync" and settings.discord_token is None:
            raise SettingsError("DISCORD_TOKEN is not set: `bot sync` logs in as the bot to "
                                "register its commands")
        if args.command == "sync":
            check_token_format(settings.discord_token.get_secret_value())
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings)

    if args.command == "run":
        from bot.frontends.discord.app import run_bot  # imports discord only when serving Discord

        return run_main(run_bot(settings), settings, "bot run", interrupted=0)
    if args.command == "check":
        return run_main(_check(settings), settings, "bot check")
    if args.command == "worker":
        return run_main(_worker(settings), settings, "bot worker", interrupted=0)
    if args.command == "servers":
        return run_main(_servers(settings, args), settings, "bot servers")
    if args.command in ("sync", "commands"):
        return run_main(_commands(settings, args), settings, f"bot {args.command}")
    from bot.frontends.console import run_console

    if settings.uses_dev_secret:
        print("note: USER_HASH_SECRET is not set, so the console hashes user ids with the "
              "development value (fine for trying it out; `bot run` refuses it)",
              file=sys.stderr)
    return run_main(run_console(settings, guild_id=args.guild, channel_id=args.channel,
                                user=args.user), settings, "bot console", interrupted=0)


async def _commands(settings, args) -> int:
    # Imports discord only for the Discord commands.
    from bot.frontends.discord import command_tree

    if args.command == "sync":
        print(await command_tree.sync_commands(settings, args.guild, clear=args.clear))
        return 0
    text = await command_tree.commands_json(settings)
    if not args.json:
        text = "\n".join(command_tree.command_summary(json.loads(text)))
    print(text)
    return 0


def _version() -> str:
    try:
        return importlib.metadata.version("learning-discord-bot")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed: run from a checkout)"


async def _check(settings) -> int:
    """What `bot run` needs before it logs in, each part said on its own line."""
    import asyncio

    from bot.core.model_source import ensure_model
    from bot.core.store import Store

    print(f"settings: valid (Redis {settings.redis_address}, key prefix {settings.key_prefix})")
    store = Store.from_settings(settings)
    try:
        await store.ping()  # reachable, the schema, an eviction policy that keeps adapters
    finally:
        await store.close()
    print("redis: reachable, schema and maxmemory-policy fit")
    await asyncio.to_thread(ensure_model, settings.model_name)
    print(f"model: MODEL_NAME={settings.model_name} is there to load")
    return 0


async def _worker(settings) -> int:
    try:
        from bot.fleet.app import run_worker  # imports ray only here
    except ImportError:
        print("error: `bot worker` needs Ray Serve: pip install -e '.[fleet]'", file=sys.stderr)
        return 2
    return await run_worker(settings)


async def _servers(settings, args) -> int:
    from bot.core.store import Store
    from bot.service import servers

    if args.act == "wipe" and not args.yes:
        print(f"this deletes everything of server {args.guild}; add --yes to do it",
              file=sys.stderr)
        return 2
    store = Store.from_settings(settings)
    try:
        await store.ping()
        if args.act == "list":
            lines = await servers.list_servers(store, settings.home_guild_id)
        elif args.act == "default":
            lines = [await servers.make_default(store, args.guild)]
        else:
            lines = [await servers.wipe(store, args.guild)]
    finally:
        await store.close()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
