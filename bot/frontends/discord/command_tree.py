"""The slash-command tree on demand, never at start (Discord rate-limits syncs):
`python -m bot sync` registers it (`sync_commands`), `python -m bot commands [--json]` prints
what a sync would send (`commands_json`, `command_summary`), connecting to nothing.
"""

from __future__ import annotations

import json

import discord
from discord.ext import commands

from bot.core.fatal import Fatal
from bot.frontends.discord.app import build_bot


def command_payloads(bot: commands.Bot) -> list[dict]:
    """What a global sync sends: one payload per command, as Discord's API takes them."""
    return [command.to_dict(bot.tree) for command in bot.tree.get_commands()]


async def commands_json(settings) -> str:
    """The JSON list `python -m bot sync` would send, without connecting to Discord or Redis."""
    bot = build_bot(settings, None)
    try:
        await bot.setup_hook()
        return json.dumps(command_payloads(bot), indent=2, ensure_ascii=False)
    finally:
        await bot.close()


def command_summary(payloads: list[dict]) -> list[str]:
    """One line per command of `command_payloads`: its name, subcommands, who sees it, where."""
    lines = []
    for payload in payloads:
        subs = [option["name"] for option in payload.get("options", [])
                if option.get("type") in (1, 2)]  # subcommands and subcommand groups
        name = ("/" if payload.get("type", 1) == 1 else "menu ") + payload["name"]
        shown = payload.get("default_member_permissions")
        who = "everyone" if shown is None else (
            ", ".join(perm for perm, on in discord.Permissions(int(shown)) if on) or "admins")
        contexts = payload.get("contexts") or [0, 1, 2]
        where = "servers only" if contexts == [0] else "servers and DMs"
        lines.append(f"{name}{' (' + ', '.join(subs) + ')' if subs else ''}: shown to {who}; "
                     f"{where}")
    return lines


async def sync_tree(bot: commands.Bot, guild_id: int | None, *, clear: bool = False) -> str:
    """Register the commands with Discord: globally, or (with `guild_id`) as copies in that one
    server, where they show at once (for testing). `clear` removes them there instead."""
    guild = discord.Object(id=guild_id) if guild_id is not None else None
    if clear:
        bot.tree.clear_commands(guild=guild)
    elif guild is not None:
        bot.tree.copy_global_to(guild=guild)
    synced = await bot.tree.sync(guild=guild)
    where = f"server {guild_id}" if guild_id is not None else "every server (global)"
    if clear:
        return f"removed the commands from {where}"
    names = ", ".join(sorted(command.name for command in synced))
    return f"synced {len(synced)} commands to {where}: {names}"


async def sync_commands(settings, guild_id: int | None = None, *, clear: bool = False) -> str:
    """`python -m bot sync`: log in over HTTP only (no gateway), sync, log out."""
    bot = build_bot(settings, None)
    try:
        try:
            await bot.login(settings.discord_token.get_secret_value())  # runs setup_hook
        except discord.LoginFailure:
            raise Fatal("Discord refused DISCORD_TOKEN: copy the bot token again from the "
                        "developer portal") from None
        try:
            return await sync_tree(bot, guild_id, clear=clear)
        except discord.Forbidden:
            raise Fatal(f"Discord refused to sync to server {guild_id}: invite the bot there "
                        "with the applications.commands scope (docs/discord-setup.md)") from None
        except discord.HTTPException as error:
            raise Fatal(f"Discord refused the sync: {error}") from None
    finally:
        await bot.close()
