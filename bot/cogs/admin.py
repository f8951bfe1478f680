"""Slash commands: /style, /adapter, /train, /chat, /modlog (admins), /stats (moderators),
/forget me.

Every answer is ephemeral. The work itself lives in bot.actions, shared with the console; each
act on data, adapters or training is this server's only (the interaction's guild).
"""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot import actions
from bot.cogs.checks import admin_only, moderator_only


async def _answer(interaction: discord.Interaction, answer: actions.Answer) -> None:
    await interaction.response.send_message(answer.text, ephemeral=True)


def _scope(scope: str) -> actions.Scope:
    return "guild" if scope == "server" else "channel"


class Admin(commands.Cog):
    style = app_commands.Group(name="style", description="The voice prefix of the bot's replies",
                               guild_only=True)
    adapter = app_commands.Group(name="adapter", description="The LoRA adapter in service",
                                 guild_only=True)
    train = app_commands.Group(name="train", description="Training of new adapters",
                               guild_only=True)
    chat = app_commands.Group(name="chat", description="Answer every message in this channel",
                              guild_only=True)
    modlog = app_commands.Group(name="modlog", guild_only=True,
                                description="Where this server's adapter changes are posted")
    forget = app_commands.Group(name="forget", description="Delete what the bot stored of you")

    def __init__(self, bot):
        self.bot = bot
        self.actions: actions.Actions = bot.actions

    # --- /style -------------------------------------------------------------------------------

    @style.command(name="set", description="Set the style prefix for this channel or server")
    @app_commands.describe(prefix="e.g. 'Answer as a polite support agent:'",
                           scope="channel (default) or the whole server")
    @admin_only()
    async def style_set(self, interaction: discord.Interaction, prefix: str,
                        scope: Literal["channel", "server"] = "channel") -> None:
        scope_id = interaction.channel_id if scope == "channel" else interaction.guild_id
        await _answer(interaction, await self.actions.set_style(
            _scope(scope), scope_id, prefix, interaction.user.id))

    @style.command(name="show", description="Show the style prefix in force here")
    @admin_only()
    async def style_show(self, interaction: discord.Interaction) -> None:
        await _answer(interaction, await self.actions.show_style(interaction.guild_id,
                                                                 interaction.channel_id))

    @style.command(name="clear", description="Remove the style prefix of this channel or server")
    @admin_only()
    async def style_clear(self, interaction: discord.Interaction,
                          scope: Literal["channel", "server"] = "channel") -> None:
        scope_id = interaction.channel_id if scope == "channel" else interaction.guild_id
        await _answer(interaction, await self.actions.clear_style(_scope(scope), scope_id))

    # --- /adapter, /train ---------------------------------------------------------------------

    @adapter.command(name="status", description="The adapter in service, its metrics and data")
    @admin_only()
    async def adapter_status(self, interaction: discord.Interaction) -> None:
        await _answer(interaction, await self.actions.adapter_status(interaction.guild_id))

    @adapter.command(name="rollback", description="Go back to the previous adapter at once")
    @admin_only()
    async def adapter_rollback(self, interaction: discord.Interaction) -> None:
        # Loading an adapter can outlast Discord's 3-second answer window: acknowledge first.
        await interaction.response.defer(ephemeral=True, thinking=True)
        answer = await self.actions.rollback(interaction.guild_id)
        await interaction.edit_original_response(content=answer.text)
        if answer.event is not None:
            # This process swapped already, so its follower sees no change to announce.
            await self.bot.announce_change(answer.event, None)

    @train.command(name="now", description="Ask the trainer for a training cycle now")
    @admin_only()
    async def train_now(self, interaction: discord.Interaction) -> None:
        requested_by = f"discord:{self.bot.store.user_hash(interaction.user.id)[:16]}"
        await _answer(interaction, await self.actions.train_now(interaction.guild_id,
                                                                requested_by))

    # --- /chat --------------------------------------------------------------------------------

    @chat.command(name="on", description="Answer every message in this channel")
    @admin_only()
    async def chat_on(self, interaction: discord.Interaction) -> None:
        await _answer(interaction, await self.actions.chat(interaction.channel_id, True))

    @chat.command(name="off", description="Answer only mentions and replies in this channel")
    @admin_only()
    async def chat_off(self, interaction: discord.Interaction) -> None:
        await _answer(interaction, await self.actions.chat(interaction.channel_id, False))

    # --- /modlog ------------------------------------------------------------------------------

    @modlog.command(name="here", description="Post this server's adapter changes in this channel")
    @admin_only()
    async def modlog_here(self, interaction: discord.Interaction) -> None:
        await _answer(interaction, await self.actions.set_modlog(interaction.guild_id,
                                                                 interaction.channel_id))

    @modlog.command(name="off", description="Stop posting this server's adapter changes")
    @admin_only()
    async def modlog_off(self, interaction: discord.Interaction) -> None:
        await _answer(interaction, await self.actions.set_modlog(interaction.guild_id, None))

    # --- everyone / moderators ----------------------------------------------------------------

    @forget.command(name="me", description="Delete your messages and the replies to them")
    async def forget_me(self, interaction: discord.Interaction) -> None:
        await _answer(interaction, await self.actions.forget(interaction.user.id))

    @app_commands.command(name="stats", description="Exchanges and ratings per adapter version")
    @app_commands.guild_only()
    @moderator_only()
    async def stats(self, interaction: discord.Interaction) -> None:
        await _answer(interaction, await self.actions.stats(interaction.guild_id))


async def setup(bot) -> None:
    await bot.add_cog(Admin(bot))
