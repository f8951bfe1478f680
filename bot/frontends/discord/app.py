"""The discord.py client: intents, cogs, the app-command error handler, the hot-swap listener.

`build_bot(settings, runtime)` makes the client (an AutoShardedBot when SHARD_COUNT is set,
running the shards in SHARD_IDS, or all of them) on what the runtime built; its IDENTIFYs are
paced across processes through the store (identify.py); `run_bot(settings)` runs it inside
the runtime for `python -m bot run`.
The command tree is synced on demand only (command_tree.py); adapter changes are posted to the
mod log (modlog.py).
"""

from __future__ import annotations

import logging

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.core.fatal import Fatal
from bot.core.store import StoreUnavailable
from bot.frontends.discord.identify import IdentifyGate
from bot.frontends.discord.modlog import ModLog
from bot.runtime import Runtime

log = logging.getLogger(__name__)

COGS = tuple(f"bot.frontends.discord.cogs.{name}"
             for name in ("chat", "ratings", "admin", "trust", "health", "catchup"))
APOLOGY = "Sorry, something went wrong on my side. Please try again later."
STORE_APOLOGY = "Sorry, I can't reach my memory right now; nothing was changed. Please try again."


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
    except (discord.HTTPException, discord.InteractionResponded) as http_error:
        log.warning("could not answer a failed interaction: %s", http_error)


class _BotCore:
    """What both the plain and the sharded bot share (mixed in before the discord class).

    Its dependencies come in as keyword arguments, as in discord.py's advanced_startup example:
    what the runtime built, or no runtime for a bot that only lists or syncs its commands.
    """

    def __init__(self, *args, settings, runtime: Runtime | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.runtime = runtime
        # What the cogs use (None without a runtime: the cogs are loaded, never run).
        self.store = runtime.store if runtime else None
        self.conversation = runtime.conversation if runtime else None
        self.actions = runtime.actions if runtime else None
        self.cooldowns = runtime.cooldowns if runtime else None
        self.deletions = runtime.deletions if runtime else None
        self.modlog = ModLog(self, runtime.store, settings) if runtime else None
        self.identify_gate = IdentifyGate(runtime.store, self.http) if runtime else None
        self.tree.on_error = on_app_command_error

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Take this shard's IDENTIFY slot, shared with every gateway process (identify.py)."""
        if self.identify_gate is None:
            await super().before_identify_hook(shard_id, initial=initial)
        else:
            await self.identify_gate.wait(shard_id, initial=initial)

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


class LearningBot(_BotCore, commands.Bot):
    pass


class ShardedLearningBot(_BotCore, commands.AutoShardedBot):
    pass


def build_bot(settings, runtime: Runtime | None) -> commands.Bot:
    """The bot client on what `runtime` built: it answers through its conversation and keeps
    everything in its store. (Without a runtime it can only list and sync its commands.)"""
    options = dict(command_prefix=commands.when_mentioned, intents=intents(),
                   allowed_mentions=discord.AllowedMentions.none(), help_command=None,
                   settings=settings, runtime=runtime)
    if settings.shard_count:
        return ShardedLearningBot(shard_count=settings.shard_count,
                                  shard_ids=settings.shard_id_list, **options)
    return LearningBot(**options)


async def log_in_once(settings) -> None:
    """Log in before the model loads, so a token Discord refuses is said in seconds."""
    client = discord.Client(intents=discord.Intents.none())
    try:
        await client.login(settings.discord_token.get_secret_value())
    except discord.LoginFailure:
        raise Fatal("Discord refused DISCORD_TOKEN: copy the bot token again from the "
                    "developer portal") from None
    except (aiohttp.ClientError, OSError, discord.HTTPException) as error:
        raise Fatal(f"cannot log in to Discord ({type(error).__name__}: {error}): check the "
                    "network and DISCORD_TOKEN") from None
    finally:
        await client.close()


async def run_bot(settings) -> None:
    """Open the runtime (Redis, a login, model, active adapter, registry follower), then serve
    Discord."""
    async with Runtime(settings, preflight=lambda: log_in_once(settings)) as runtime:
        bot = build_bot(settings, runtime)
        runtime.on_change(bot.modlog.announce)
        async with bot:
            await start(bot, settings.discord_token.get_secret_value())


SHARDING_REQUIRED = 4011  # the gateway's close code for a bot in too many servers for one


async def start(bot: commands.Bot, token: str) -> None:
    """Connect and serve until closed; Discord's refusals become a Fatal that says what to do."""
    try:
        await bot.start(token)
    except discord.LoginFailure:
        raise Fatal("Discord refused DISCORD_TOKEN: copy the bot token again from the "
                    "developer portal") from None
    except discord.PrivilegedIntentsRequired:
        raise Fatal("Discord refused the Message Content intent: enable it for the bot "
                    "in the developer portal (docs/discord-setup.md)") from None
    except discord.ConnectionClosed as closed:
        if closed.code != SHARDING_REQUIRED:
            raise
        count = getattr(bot, "shard_count", None)
        if count:
            raise Fatal(f"Discord requires more shards: SHARD_COUNT {count} leaves a shard "
                        "with too many servers; raise SHARD_COUNT on every gateway process "
                        "(and spread SHARD_IDS over them) and start them again") from None
        raise Fatal("Discord requires sharding: the bot is in too many servers for one "
                    "connection; set SHARD_COUNT (e.g. 2) and start it again") from None
