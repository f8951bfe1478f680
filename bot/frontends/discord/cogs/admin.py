"""Slash commands: /style, /adapter, /train, /chat, /modlog (admins), /stats (moderators),
/forget me (trust.py has /review, /moderators and the exam menus).

Every answer is ephemeral. Every command is acknowledged (deferred) before it touches the store,
so it answers within Discord's 3-second window however slow the store is. The work itself lives
in bot.service.actions, shared with the console; each act on data, adapters or training is this
server's only (the interaction's guild).
"""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.store.privacy import requester
from bot.frontends.discord import permissions
from bot.frontends.discord.cogs.checks import admin_only, moderator_only
from bot.service import actions

# Whom Discord shows the commands to by default (a server's admins may change that under
# Server Settings > Integrations); the checks in code decide whatever it shows.
ADMIN_PERMISSIONS = discord.Permissions(manage_guild=True)
MODERATOR_PERMISSIONS = discord.Permissions(manage_messages=True)


def in_servers() -> app_commands.AppCommandContext:
    return app_commands.AppCommandContext(guild=True)


def admin_group(name: str, description: str) -> app_commands.Group:
    """A command group for admins, in servers only (both set on the group: Discord ignores
    them on subcommands)."""
    return app_commands.Group(name=name, description=description, guild_only=True,
                              allowed_contexts=in_servers(),
                              default_permissions=ADMIN_PERMISSIONS)


async def acknowledge(interaction: discord.Interaction) -> None:
    """Defer (ephemerally) unless already answered: Discord waits 3 s for a first answer, the
    store may take longer; the answer then comes as a follow-up."""
    if not interaction.response.is_done():
        await interaction.response.defer(ephemeral=True, thinking=True)


async def say(interaction: discord.Interaction, answer: actions.Answer) -> None:
    """An act's answer, shown to the one who asked only (a follow-up once deferred)."""
    if interaction.response.is_done():
        await interaction.followup.send(answer.text, ephemeral=True)
    else:
        await interaction.response.send_message(answer.text, ephemeral=True)


def _scope(scope: str) -> actions.Scope:
    return "guild" if scope == "server" else "channel"


NOT_A_THREAD = actions.Answer("Nothing changed: this is not a thread; use scope channel (or "
                              "server) here.", ok=False)


def place(interaction: discord.Interaction, scope: str) -> tuple[int, str] | None:
    """The channel id a channel, thread or server scope names, and how to name it in an
    answer (None: scope thread outside a thread).

    In a thread (or forum post), "channel" is the channel it belongs to (its threads follow
    it) and "thread" the thread alone; elsewhere "channel" is the channel itself.
    """
    if scope == "server":
        return interaction.guild_id, "this server"
    channel = interaction.channel
    parent_id = channel.parent_id if isinstance(channel, discord.Thread) else None
    if scope == "thread":
        if parent_id is None:
            return None
        return interaction.channel_id, "this thread"
    if parent_id is not None:
        return parent_id, f"<#{parent_id}> and its threads"
    return interaction.channel_id, "this channel"


def parent_id_of(interaction: discord.Interaction) -> int | None:
    channel = interaction.channel
    return channel.parent_id if isinstance(channel, discord.Thread) else None


class Admin(commands.Cog):
    style = admin_group("style", "The voice prefix of the bot's replies")
    adapter = admin_group("adapter", "The LoRA adapter in service")
    train = admin_group("train", "Training of new adapters")
    chat = admin_group("chat", "Answer every message in this channel")
    modlog = admin_group("modlog", "Where this server's adapter changes are posted")
    forget = app_commands.Group(
        name="forget", description="Delete what the bot stored of you",
        allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True))

    def __init__(self, bot):
        self.bot = bot
        self.actions: actions.Actions = bot.actions

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Runs before every command of this cog (and its checks): acknowledge first."""
        await acknowledge(interaction)
        return True

    # --- /style -------------------------------------------------------------------------------

    @style.command(name="set", description="Set the style prefix for this channel, thread or "
                                           "server")
    @app_commands.describe(prefix="e.g. 'Answer as a polite support agent:'",
                           scope="channel (default; in a thread: its channel), thread, or the "
                                 "whole server")
    @admin_only()
    async def style_set(self, interaction: discord.Interaction, prefix: str,
                        scope: Literal["channel", "thread", "server"] = "channel") -> None:
        target = place(interaction, scope)
        if target is None:
            return await say(interaction, NOT_A_THREAD)
        await say(interaction, await self.actions.set_style(
            _scope(scope), target[0], prefix, interaction.user.id, where=target[1]))

    @style.command(name="show", description="Show the style prefix in force here")
    @admin_only()
    async def style_show(self, interaction: discord.Interaction) -> None:
        await say(interaction, await self.actions.show_style(
            interaction.guild_id, interaction.channel_id, parent_id_of(interaction)))

    @style.command(name="clear", description="Remove the style prefix of this channel, thread "
                                             "or server")
    @admin_only()
    async def style_clear(self, interaction: discord.Interaction,
                          scope: Literal["channel", "thread", "server"] = "channel") -> None:
        target = place(interaction, scope)
        if target is None:
            return await say(interaction, NOT_A_THREAD)
        await say(interaction, await self.actions.clear_style(_scope(scope), target[0],
                                                                  where=target[1]))
    # --- /adapter, /train ---------------------------------------------------------------------

    @adapter.command(name="status", description="The adapter in service, its metrics and data")
    @admin_only()
    async def adapter_status(self, interaction: discord.Interaction) -> None:
        await say(interaction, await self.actions.adapter_status(interaction.guild_id))

    @adapter.command(name="rollback", description="Go back to the previous adapter at once")
    @admin_only()
    async def adapter_rollback(self, interaction: discord.Interaction) -> None:
        answer = await self.actions.rollback(interaction.guild_id)
        await interaction.edit_original_response(content=answer.text)
        if answer.event is not None:
            # This process swapped already, so its follower sees no change to announce.
            await self.bot.modlog.announce(answer.event, None)

    @adapter.command(name="promote", description="Promote the canary: it answers every "
                                                 "conversation")
    @admin_only()
    async def adapter_promote(self, interaction: discord.Interaction) -> None:
        await self._canary_act(interaction, self.actions.canary.promote)

    @adapter.command(name="abort", description="End the canary: the active adapter answers "
                                               "every conversation")
    @admin_only()
    async def adapter_abort(self, interaction: discord.Interaction) -> None:
        await self._canary_act(interaction, self.actions.canary.abort)

    async def _canary_act(self, interaction: discord.Interaction, act) -> None:
        # Deferred already (interaction_check): promoting loads an adapter.
        answer = await act(interaction.guild_id)
        await interaction.edit_original_response(content=answer.text)

    @train.command(name="now", description="Ask the trainer for a training cycle now")
    @admin_only()
    async def train_now(self, interaction: discord.Interaction) -> None:
        requested_by = requester(self.bot.store.user_hash(interaction.user.id))
        await say(interaction, await self.actions.train_now(interaction.guild_id,
                                                                requested_by))

    # --- /chat --------------------------------------------------------------------------------

    @chat.command(name="on", description="Answer every message in this channel (and its "
                                         "threads)")
    @app_commands.describe(scope="channel (default; in a thread: its channel and all its "
                                 "threads) or this thread alone")
    @admin_only()
    async def chat_on(self, interaction: discord.Interaction,
                      scope: Literal["channel", "thread"] = "channel") -> None:
        await self._chat(interaction, scope, on=True)

    @chat.command(name="off", description="Answer only mentions and replies in this channel")
    @app_commands.describe(scope="channel (default; in a thread: its channel) or this thread")
    @admin_only()
    async def chat_off(self, interaction: discord.Interaction,
                       scope: Literal["channel", "thread"] = "channel") -> None:
        await self._chat(interaction, scope, on=False)

    async def _chat(self, interaction: discord.Interaction, scope: str, *, on: bool) -> None:
        target = place(interaction, scope)
        if target is None:
            return await say(interaction, NOT_A_THREAD)
        own = interaction.app_permissions  # the bot's, in this channel
        if on and (missing := permissions.missing_to_answer(interaction.channel, own)):
            return await say(interaction, actions.Answer(permissions.cannot_answer_text(
                missing), ok=False))
        # A thread turned off still follows its channel: the answer says so when that is on.
        parent_id = parent_id_of(interaction) if not on and scope == "thread" else None
        answer = await self.actions.chat(target[0], on, where=target[1], parent_id=parent_id)
        if on and answer.ok:
            answer = actions.Answer(answer.text + permissions.optional_note(
                permissions.missing_optional(interaction.channel, own)), ok=True)
        await say(interaction, answer)

    # --- /modlog ------------------------------------------------------------------------------

    @modlog.command(name="here", description="Post this server's adapter changes in this channel")
    @admin_only()
    async def modlog_here(self, interaction: discord.Interaction) -> None:
        await say(interaction, await self.actions.set_modlog(interaction.guild_id,
                                                                 interaction.channel_id))

    @modlog.command(name="off", description="Stop posting this server's adapter changes")
    @admin_only()
    async def modlog_off(self, interaction: discord.Interaction) -> None:
        await say(interaction, await self.actions.set_modlog(interaction.guild_id, None))

    # --- everyone / moderators ----------------------------------------------------------------

    @forget.command(name="me", description="Delete everything the bot stored of you")
    async def forget_me(self, interaction: discord.Interaction) -> None:
        answer = await self.actions.forget(interaction.user.id)
        await interaction.edit_original_response(content=answer.text)

    @app_commands.command(name="stats", description="Exchanges and ratings per adapter version")
    @app_commands.guild_only()
    @app_commands.default_permissions(MODERATOR_PERMISSIONS)
    @moderator_only()
    async def stats(self, interaction: discord.Interaction) -> None:
        answer = await self.actions.stats(interaction.guild_id)
        await interaction.edit_original_response(content=answer.text)


async def setup(bot) -> None:
    await bot.add_cog(Admin(bot))
