"""The discord.py client: intents, cogs, the app-command error handler, the hot-swap listener.

`build_bot(settings, store, engine)` makes the client (an AutoShardedBot when SHARD_COUNT is
set); `run_bot(settings)` owns the store and engine for `python -m bot run`.
"""

from __future__ import annotations

import asyncio
import io
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.chat import Conversation
from bot.cogs.chat import MESSAGE_LIMIT
from bot.engine import Engine
from bot.follow import follow_registry, sync_active
from bot.store import Store

log = logging.getLogger(__name__)

COGS = ("bot.cogs.chat", "bot.cogs.ratings", "bot.cogs.admin")
APOLOGY = "Sorry, something went wrong on my side. Please try again later."
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
        log.error("app command %s failed", getattr(interaction.command, "qualified_name", "?"),
                  exc_info=original)
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
    hyperparameters.learning_rate, ...) flattened one level; long lists are left out."""
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
    """What both the plain and the sharded bot share (mixed in before the discord class)."""

    def _setup_state(self, settings, store: Store, engine, follow: bool, sync_commands: bool):
        self.settings = settings
        self.store = store
        self.engine = engine
        self.conversation = Conversation(settings, store, engine)
        self._follow = follow
        self._sync_commands = sync_commands
        self.follower: asyncio.Task | None = None
        self.tree.on_error = on_app_command_error

    async def setup_hook(self) -> None:
        for name in COGS:
            await self.load_extension(name)
        if self._follow:
            self.follower = asyncio.create_task(
                follow_registry(self.store, self.engine, on_change=self.announce_change),
                name="adapter-follower")
        if self._sync_commands:
            await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        """No prefix commands: the chat cog's listener handles messages."""

    async def announce_change(self, event, record) -> None:
        """Post an adapter change with its report and loss curve to MODLOG_CHANNEL_ID."""
        channel_id = self.settings.modlog_channel_id
        if channel_id is None:
            return
        # Every bot process follows the registry: the first to claim the change posts it.
        if not await self.store.claim("modlog", event.kind, event.version, event.previous,
                                      ttl_s=MODLOG_CLAIM_S):
            return
        report, png = await self.store.report(event.version)
        files = [discord.File(io.BytesIO(png), filename=f"loss-{event.version}.png")] if png \
            else []
        try:
            channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
            await channel.send(modlog_text(event, report), files=files)
        except discord.HTTPException as error:
            log.warning("could not post to the modlog channel %s: %s", channel_id, error)

    async def close(self) -> None:
        if self.follower is not None:
            self.follower.cancel()
            await asyncio.gather(self.follower, return_exceptions=True)
        await super().close()


class LearningBot(_BotCore, commands.Bot):
    pass


class ShardedLearningBot(_BotCore, commands.AutoShardedBot):
    pass


def build_bot(settings, store: Store, engine, *, follow: bool = True,
              sync_commands: bool = True) -> commands.Bot:
    """The bot client; it answers through `engine` and keeps everything in `store`."""
    options = dict(command_prefix=commands.when_mentioned, intents=intents(),
                   allowed_mentions=discord.AllowedMentions.none(), help_command=None)
    if settings.shard_count:
        bot = ShardedLearningBot(shard_count=settings.shard_count, **options)
    else:
        bot = LearningBot(**options)
    bot._setup_state(settings, store, engine, follow, sync_commands)
    return bot


async def run_bot(settings) -> None:
    """Connect to Redis, load the model and the active adapter, then serve Discord."""
    store = Store.from_settings(settings)
    await store.ping()
    engine = Engine.from_settings(settings)
    await engine.start()
    try:
        log.info("serving adapter %s", await sync_active(store, engine))
        bot = build_bot(settings, store, engine)
        async with bot:
            await bot.start(settings.discord_token.get_secret_value())
    finally:
        await engine.close()
        await store.close()
