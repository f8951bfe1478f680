"""The discord.py client: intents, cogs, the app-command error handler, the hot-swap listener.

`build_bot(settings, store, generator)` makes the client (an AutoShardedBot when SHARD_COUNT is
set); `run_bot(settings)` runs it inside the runtime for `python -m bot run`. The command tree
is never synced at start (Discord rate-limits syncs): `python -m bot sync` does it on demand
(`sync_commands`), and `python -m bot commands --json` prints what a sync would send
(`command_payloads`), without connecting to anything.
"""

from __future__ import annotations

import io
import json
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.fatal import Fatal
from bot.core.generation import Generator
from bot.core.store import Store, StoreUnavailable
from bot.frontends.discord.cogs.replies import MESSAGE_LIMIT
from bot.runtime import Runtime
from bot.service.actions import Actions
from bot.service.answer_text import refusal_line
from bot.service.conversation import Conversation
from bot.service.follow import Serving

log = logging.getLogger(__name__)

COGS = tuple(f"bot.frontends.discord.cogs.{name}"
             for name in ("chat", "ratings", "admin", "health"))
APOLOGY = "Sorry, something went wrong on my side. Please try again later."
STORE_APOLOGY = "Sorry, I can't reach my memory right now; nothing was changed. Please try again."
MODLOG_NUMBERS = 30  # report entries shown in a modlog post
MODLOG_VALUE_CHARS = 200
MODLOG_CLAIM_S = 600  # how long one adapter change counts as announced


def intents() -> discord.Intents:
    found = discord.Intents.default()
    found.message_content = True  # privileged: enable it in the developer portal too
    found.members = False
    return found


async def on_app_command_error(interaction: discord.Interaction,
                               error: app_commands.AppCommandError) -> None:
    """Refusals are answered ephemerally; anything else is logged and answered with an apology."""
    if isinstance(error, app_commands.CheckFailure):
        text = str(error) if str(error) else "You are not allowed to do that here."
        if isinstance(error, app_commands.NoPrivateMessage):
            text = "That command works in a server channel, not in DMs."
    else:
        original = getattr(error, "original", error)
        name = getattr(interaction.command, "qualified_name", "?")
        if isinstance(original, StoreUnavailable):
            log.warning("app command %s failed: the store is unavailable (%s)", name, original)
            text = STORE_APOLOGY
        else:
            log.error("app command %s failed", name, exc_info=original)
            text = APOLOGY
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as http_error:
        log.warning("could not answer a failed interaction: %s", http_error)


def modlog_text(event, report: dict | None) -> str:
    """The post for an adapter change: the report's numbers, nested ones (val_loss.candidate,
    hyperparameters.learning_rate, ...) flattened one level; long lists are left out. A
    refused adapter is one line."""
    if event.kind == "refused":
        return f"Adapter {refusal_line(event.version, event.reason, event.previous)}"
    verb = "rolled back to" if event.kind == "rollback" else "now serving"
    lines = [f"Adapter change: {verb} **{event.version}** (was {event.previous})"]
    flat: dict = {}
    for key, value in (report or {}).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    for key, value in flat.items():
        if isinstance(value, float):
            lines.append(f"{key}: {value:.4g}")
        elif isinstance(value, int | str) and len(str(value)) <= MODLOG_VALUE_CHARS:
            lines.append(f"{key}: {value}")
    return "\n".join(lines[:MODLOG_NUMBERS + 1])[:MESSAGE_LIMIT]


class _BotCore:
    """What both the plain and the sharded bot share (mixed in before the discord class).

    Its dependencies come in as keyword arguments, as in discord.py's advanced_startup example.
    """

    def __init__(self, *args, settings, store: Store, generator: Generator | None,
                 serving: Serving | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.store = store
        self.generator = generator
        self.serving = serving or Serving(store, generator, settings.home_guild_id)
        self.conversation = Conversation(settings, store, generator, self.serving)
        self.actions = Actions(settings, store, generator, self.serving)
        self.tree.on_error = on_app_command_error

    async def setup_hook(self) -> None:
        # No tree.sync() here: `python -m bot sync` registers the commands when they change.
        for name in COGS:
            await self.load_extension(name)

    async def on_message(self, message: discord.Message) -> None:
        """No prefix commands: the chat cog's listener handles messages."""

    def allowed(self, guild: discord.Guild) -> bool:
        allowed = self.settings.allowed_guilds
        return not allowed or guild.id in allowed

    async def on_ready(self) -> None:
        for guild in list(self.guilds):
            await self._leave_unless_allowed(guild)

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self._leave_unless_allowed(guild)

    async def _leave_unless_allowed(self, guild: discord.Guild) -> None:
        if self.allowed(guild):
            return
        log.warning("leaving server %s (%s): it is not in ALLOWED_GUILD_IDS", guild.id,
                    guild.name)
        try:
            await guild.leave()
        except discord.HTTPException as error:
            log.error("could not leave server %s: %s", guild.id, error)

    async def modlog_channel_id(self, tenant: int | None) -> int | None:
        """Where a server's adapter changes go: its own setting, else MODLOG_CHANNEL_ID for
        the home server."""
        if tenant is None:
            return None
        channel_id = await self.store.tenant(tenant).modlog_channel()
        if channel_id is None and tenant == self.settings.home_guild_id:
            channel_id = self.settings.modlog_channel_id
        return channel_id

    async def announce_change(self, event, record) -> None:
        """Post an adapter change with its report and loss curve to that server's mod log."""
        channel_id = await self.modlog_channel_id(event.tenant)
        if channel_id is None:
            return
        # Every bot process follows the registry: the first to claim the change posts it.
        try:
            if not await self.store.claim("modlog", event.kind, event.version, event.previous,
                                          ttl_s=MODLOG_CLAIM_S):
                return
            report, png = ((None, None) if event.kind == "refused"
                           else await self.store.registry.report(event.version))
        except StoreUnavailable as error:
            log.warning("adapter change to %s not posted to the modlog: the store is "
                        "unavailable (%s)", event.version, error)
            return
        files = [discord.File(io.BytesIO(png), filename=f"loss-{event.version}.png")] if png \
            else []
        try:
            channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
            await channel.send(modlog_text(event, report), files=files)
        except discord.HTTPException as error:
            log.warning("could not post to the modlog channel %s: %s", channel_id, error)


class LearningBot(_BotCore, commands.Bot):
    pass


class ShardedLearningBot(_BotCore, commands.AutoShardedBot):
    pass


def build_bot(settings, store: Store, generator: Generator | None, *,
              serving: Serving | None = None) -> commands.Bot:
    """The bot client; it answers through `generator` (with the adapter `serving` names for
    each server) and keeps everything in `store`. (Without a generator it can only list and
    sync its commands.)"""
    options = dict(command_prefix=commands.when_mentioned, intents=intents(),
                   allowed_mentions=discord.AllowedMentions.none(), help_command=None,
                   settings=settings, store=store, generator=generator, serving=serving)
    if settings.shard_count:
        return ShardedLearningBot(shard_count=settings.shard_count, **options)
    return LearningBot(**options)


async def run_bot(settings) -> None:
    """Open the runtime (Redis, model, active adapter, registry follower), then serve Discord."""
    async with Runtime(settings) as runtime:
        bot = build_bot(settings, runtime.store, runtime.generator, serving=runtime.serving)
        runtime.on_change(bot.announce_change)
        async with bot:
            try:
                await bot.start(settings.discord_token.get_secret_value())
            except discord.LoginFailure:
                raise Fatal("Discord refused DISCORD_TOKEN: copy the bot token again from the "
                            "developer portal") from None
            except discord.PrivilegedIntentsRequired:
                raise Fatal("Discord refused the Message Content intent: enable it for the bot "
                            "in the developer portal (docs/discord-setup.md)") from None


# --- the command tree, on demand ---------------------------------------------------------------

def command_payloads(bot: commands.Bot) -> list[dict]:
    """What a global sync sends: one payload per command, as Discord's API takes them."""
    return [command.to_dict(bot.tree) for command in bot.tree.get_commands()]


def _offline_bot(settings) -> tuple[commands.Bot, Store]:
    """The bot with its command tree, connected to nothing (its store is never used)."""
    store = Store.from_settings(settings)
    return build_bot(settings, store, None), store


async def commands_json(settings) -> str:
    """The JSON list `python -m bot sync` would send, without connecting to Discord or Redis."""
    bot, store = _offline_bot(settings)
    try:
        await bot.setup_hook()
        return json.dumps(command_payloads(bot), indent=2, ensure_ascii=False)
    finally:
        await bot.close()
        await store.close()


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
    bot, store = _offline_bot(settings)
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
        await store.close()
