"""Moderator ratings: 👍/👎 reactions on the bot's replies, and "Teach a better reply".

Raw reaction events are used so replies sent before a restart (not in the message cache) are
rated too; the exchange is found by the reply's message id in the store.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.actions import Actions
from bot.cogs.chat import THUMBS_DOWN, THUMBS_UP
from bot.cogs.checks import is_moderator, moderator_only
from bot.store import Exchange

log = logging.getLogger(__name__)

RATING_OF = {THUMBS_UP: 1, THUMBS_DOWN: -1}
TEACH_MAX_CHARS = 1500


class TeachModal(discord.ui.Modal, title="Teach a better reply"):
    """The moderator writes the reply the bot should have given; stored as a correction."""

    reply = discord.ui.TextInput(label="The reply the bot should have given",
                                 style=discord.TextStyle.paragraph, max_length=TEACH_MAX_CHARS,
                                 placeholder="Write the better reply here")

    def __init__(self, actions: Actions, exchange: Exchange):
        super().__init__()
        self.actions = actions
        self.exchange = exchange

    async def on_submit(self, interaction: discord.Interaction) -> None:
        answer = await self.actions.teach(interaction.guild_id, self.exchange.id,
                                          interaction.user.id, self.reply.value)
        await interaction.response.send_message(answer.text, ephemeral=True)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        log.exception("teach modal failed", exc_info=error)
        if not interaction.response.is_done():
            await interaction.response.send_message(
                "Sorry, something went wrong; your reply was not stored.", ephemeral=True)


class Ratings(commands.Cog):
    def __init__(self, bot):
        self.bot = bot
        self.actions: Actions = bot.actions
        self.teach_menu = app_commands.ContextMenu(name="Teach a better reply",
                                                   callback=self.teach)
        app_commands.guild_only()(self.teach_menu)
        moderator_only()(self.teach_menu)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.teach_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.teach_menu.name, type=self.teach_menu.type)

    # --- reactions ----------------------------------------------------------------------------

    def _moderator(self, payload: discord.RawReactionActionEvent) -> discord.Member | None:
        """The reacting member when they are a moderator in that channel, else None.

        Discord sends the member with every guild reaction-add, so no members intent is needed.
        """
        if payload.guild_id is None or payload.member is None:
            return None
        guild = self.bot.get_guild(payload.guild_id)
        channel = guild.get_channel_or_thread(payload.channel_id) if guild else None
        if channel is None:
            return None
        member = payload.member
        if is_moderator(member, channel.permissions_for(member), self.bot.settings):
            return member
        return None

    def _mine(self, payload: discord.RawReactionActionEvent) -> bool:
        return self.bot.user is not None and payload.user_id == self.bot.user.id

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        value = RATING_OF.get(str(payload.emoji))
        if value is None or self._mine(payload):
            return
        moderator = self._moderator(payload)
        if moderator is None:
            return  # others' reactions stay on the message but are not counted
        # Retried while the store is unavailable; a rating that still fails is reported.
        answer = await self.actions.rate_reply(payload.guild_id, payload.message_id,
                                               moderator.id, value)
        if answer is not None and not answer.ok:
            log.warning("rating on message %s not stored: %s", payload.message_id, answer.text)
            await self._report_lost_rating(payload, moderator, answer.text)

    async def _report_lost_rating(self, payload: discord.RawReactionActionEvent,
                                  moderator: discord.Member, why: str) -> None:
        """A rating that was not stored must not look counted: the moderator's reaction is
        taken off (where the bot may) and the moderator is told why in a direct message."""
        link = (f"https://discord.com/channels/{payload.guild_id}/{payload.channel_id}/"
                f"{payload.message_id}")
        channel = self.bot.get_channel(payload.channel_id)
        try:
            if channel is not None:
                message = await channel.fetch_message(payload.message_id)
                await message.remove_reaction(payload.emoji, moderator)
        except discord.HTTPException as error:
            log.info("could not take off the uncounted reaction: %s", error)
        try:
            await moderator.send(f"Your {payload.emoji} on {link} was not counted. {why}.")
        except discord.HTTPException as error:
            log.warning("could not tell moderator %s that their rating was not stored: %s",
                        moderator.id, error)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        # Removal events carry no member; only moderators' ratings were stored, so a stored
        # rating of this user with this reaction's value is what the removal withdraws
        # (removing 👎 after switching to 👍 keeps the 👍).
        value = RATING_OF.get(str(payload.emoji))
        if value is None or self._mine(payload):
            return
        if payload.guild_id is None:
            return
        answer = await self.actions.withdraw_reply(payload.guild_id, payload.message_id,
                                                   payload.user_id, value)
        if answer is not None:
            log.info("reaction removed on message %s: %s", payload.message_id, answer.text)

    # --- teach --------------------------------------------------------------------------------

    async def teach(self, interaction: discord.Interaction, message: discord.Message) -> None:
        exchange = await self.actions.exchange_of_message(message.id)
        if exchange is None:
            await interaction.response.send_message(
                "That is not one of my replies that I still remember.", ephemeral=True)
            return
        await interaction.response.send_modal(TeachModal(self.actions, exchange))


async def setup(bot) -> None:
    await bot.add_cog(Ratings(bot))
