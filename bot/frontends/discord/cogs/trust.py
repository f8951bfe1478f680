"""Slash commands and menus of moderator trust (admins): /review list|approve|reject,
/moderators distrust|trust, and the message menus "Add to exam" and "Remove from exam".

Every command is deferred before it touches the store (admin.acknowledge); every answer is
ephemeral and acts in the interaction's server only. The work lives in
bot.service.trust_actions (`actions.trust`), shared with the console.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.frontends.discord.cogs.admin import acknowledge, admin_group, say
from bot.frontends.discord.cogs.checks import admin_only
from bot.service.actions import Actions


def admin_menu(name: str, callback) -> app_commands.ContextMenu:
    """A message menu for admins, in servers only (admin_only decides; the permissions only
    choose whom Discord shows it to)."""
    menu = app_commands.ContextMenu(name=name, callback=callback)
    app_commands.guild_only()(menu)
    app_commands.default_permissions(manage_guild=True)(menu)
    admin_only()(menu)
    return menu


class Trust(commands.Cog):
    review = admin_group("review", "Teachings held for review instead of training")
    moderators = admin_group("moderators", "Whose ratings and teachings train the bot")

    def __init__(self, bot):
        self.bot = bot
        self.actions: Actions = bot.actions
        self.menus = [admin_menu("Add to exam", self.exam_add),
                      admin_menu("Remove from exam", self.exam_remove)]

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Runs before every slash command of this cog (and its checks): acknowledge first."""
        await acknowledge(interaction)
        return True

    async def cog_load(self) -> None:
        for menu in self.menus:
            self.bot.tree.add_command(menu)

    async def cog_unload(self) -> None:
        for menu in self.menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)

    # --- /review ------------------------------------------------------------------------------

    @review.command(name="list", description="What waits for review, with ids to approve or "
                                             "reject")
    @admin_only()
    async def review_list(self, interaction: discord.Interaction) -> None:
        answer = await self.actions.trust.review_list(interaction.guild_id)
        await interaction.edit_original_response(content=answer.text)

    @review.command(name="approve", description="Let a held item train from the next cycle")
    @app_commands.describe(item="the id /review list shows (or its first characters)")
    @admin_only()
    async def review_approve(self, interaction: discord.Interaction, item: str) -> None:
        await say(interaction, await self.actions.trust.approve(interaction.guild_id, item))

    @review.command(name="reject", description="Keep a held item out of training for good")
    @app_commands.describe(item="the id /review list shows (or its first characters)")
    @admin_only()
    async def review_reject(self, interaction: discord.Interaction, item: str) -> None:
        await say(interaction, await self.actions.trust.reject(interaction.guild_id, item))

    # --- /moderators --------------------------------------------------------------------------

    @moderators.command(name="distrust", description="Take a moderator's ratings and teachings "
                                                     "out of training and the exam")
    @app_commands.describe(member="the moderator")
    @admin_only()
    async def distrust(self, interaction: discord.Interaction, member: discord.Member) -> None:
        await say(interaction, await self.actions.trust.distrust(
            interaction.guild_id, member.id, member.display_name))

    @moderators.command(name="trust", description="Count a distrusted moderator's ratings and "
                                                  "teachings again")
    @app_commands.describe(member="the moderator")
    @admin_only()
    async def trust(self, interaction: discord.Interaction, member: discord.Member) -> None:
        await say(interaction, await self.actions.trust.trust(
            interaction.guild_id, member.id, member.display_name))

    # --- the exam menus -----------------------------------------------------------------------

    async def exam_add(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await acknowledge(interaction)  # menus skip the cog's interaction_check
        exchange = await self.actions.exchange_of_message(message.id)
        await say(interaction, await self.actions.trust.exam_add(interaction.guild_id,
                                                                     exchange))

    async def exam_remove(self, interaction: discord.Interaction,
                          message: discord.Message) -> None:
        await acknowledge(interaction)  # menus skip the cog's interaction_check
        exchange = await self.actions.exchange_of_message(message.id)
        await say(interaction, await self.actions.trust.exam_remove(interaction.guild_id,
                                                                        exchange))


async def setup(bot) -> None:
    await bot.add_cog(Trust(bot))
