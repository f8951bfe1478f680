"""Moderator ratings: 👍/👎 reactions on the bot's replies (a reaction removed, or all of them
cleared, withdraws the rating), and "Teach a better reply".

Raw reaction events are used so replies sent before a restart (not in the message cache) are
rated too; the exchange is found by the reply's message id in the store.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.store import Exchange
from bot.frontends.discord import permissions
from bot.frontends.discord.cogs.checks import is_moderator, moderator_only
from bot.frontends.discord.cogs.replies import rating_of
from bot.service.actions import Actions
from bot.service.rating_clears import clear_ratings

log = logging.getLogger(__name__)

TEACH_MAX_CHARS = 1500
TEACH_SHOWN_CHARS = 1500  # of the reply being corrected, shown above the text box
TEACH_TIMEOUT_S = 600.0  # under the 15 minutes an interaction can still be answered
# The menu must answer with its form within Discord's 3 s and a form cannot be deferred: the
# lookup before it gets this long, then the moderator is asked to try again.
TEACH_LOOKUP_S = 2.0
TEACH_SLOW = "I could not look that reply up quickly enough; please try again in a moment."
TEACH_FAILED = "Sorry, something went wrong; your reply was not stored."
TEACH_PREFIX = "teach:"  # custom_id of every teach form: teach:{exchange id}:{nonce}
TEACH_EXPIRED = ("The form to teach a better reply was open for more than {minutes:g} minutes "
                 "and has expired, so nothing was stored. Open it again: right-click the "
                 "reply, then Apps, then Teach a better reply.")
TEACH_LATE = ("That form had expired, so your reply was not stored. Open Teach a better reply "
              "again; here is what you wrote, to copy:\n")


def quoted(text: str, limit: int) -> str:
    """`text` as a Markdown quote of at most `limit` characters."""
    quote = "\n".join(f"> {line}" for line in text.splitlines() or [""])
    return quote if len(quote) <= limit else quote[:limit - 1] + "…"


def submitted_text(components: list[dict]) -> str:
    """The text typed into a submitted form: its text inputs' values, in order (they may sit
    in action rows or labels)."""
    found = []
    for component in components:
        if component.get("type") == 4 and component.get("value"):
            found.append(component["value"])
        inner = component.get("components", []) + (
            [component["component"]] if "component" in component else [])
        if inner and (text := submitted_text(inner)):
            found.append(text)
    return "\n".join(found)


class TeachModal(discord.ui.Modal, title="Teach a better reply"):
    """The moderator writes the reply the bot should have given; stored as a correction.

    It shows the reply it corrects, expires after TEACH_TIMEOUT_S and then says so to the
    moderator (a form submitted later is answered by `Ratings.on_interaction`)."""

    def __init__(self, actions: Actions, exchange: Exchange, opened: discord.Interaction,
                 open_forms: set[str]):
        super().__init__(timeout=TEACH_TIMEOUT_S,
                         custom_id=f"{TEACH_PREFIX}{exchange.id}:{secrets.token_hex(4)}")
        self.actions, self.exchange, self.opened = actions, exchange, opened
        self.open_forms = open_forms
        open_forms.add(self.custom_id)
        self.add_item(discord.ui.TextDisplay(
            "**The reply you correct:**\n" + quoted(exchange.reply, TEACH_SHOWN_CHARS)))
        self.reply = discord.ui.TextInput(style=discord.TextStyle.paragraph,
                                          max_length=TEACH_MAX_CHARS,
                                          placeholder="Write the better reply here")
        self.add_item(discord.ui.Label(text="The reply the bot should have given",
                                       component=self.reply))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        try:
            # Acknowledge before the store: storing may outlast Discord's 3-second window.
            await interaction.response.defer(ephemeral=True, thinking=True)
            answer = await self.actions.teach(interaction.guild_id, self.exchange.id,
                                              interaction.user.id, self.reply.value,
                                              moderator_name=interaction.user.display_name)
            await interaction.followup.send(answer.text, ephemeral=True)
        finally:
            self.open_forms.discard(self.custom_id)

    async def on_timeout(self) -> None:
        self.open_forms.discard(self.custom_id)
        try:
            await self.opened.followup.send(
                TEACH_EXPIRED.format(minutes=TEACH_TIMEOUT_S / 60), ephemeral=True)
        except discord.HTTPException as error:
            log.info("could not say that a teach form expired: %s", error)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        log.error("teach form failed", exc_info=error)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(TEACH_FAILED, ephemeral=True)
            else:
                await interaction.response.send_message(TEACH_FAILED, ephemeral=True)
        except discord.HTTPException as http_error:  # nothing left to tell the moderator with
            log.warning("could not say that a teach form failed: %s", http_error)


class Ratings(commands.Cog):
    def __init__(self, bot):
        self.bot = bot
        self.actions: Actions = bot.actions
        self.open_forms: set[str] = set()  # custom_ids of teach forms still open
        self.teach_menu = app_commands.ContextMenu(name="Teach a better reply",
                                                   callback=self.teach)
        # Shown to members with Manage Messages by default (admins may widen it in the
        # server's Integrations settings); the check below decides.
        app_commands.guild_only()(self.teach_menu)
        app_commands.default_permissions(manage_messages=True)(self.teach_menu)
        moderator_only()(self.teach_menu)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.teach_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.teach_menu.name, type=self.teach_menu.type)

    # --- reactions ----------------------------------------------------------------------------

    async def _moderator(self, payload: discord.RawReactionActionEvent
                         ) -> discord.Member | None:
        """The reacting member when they are a moderator in that channel, else None (a DM's
        reactions count for no one).

        Discord sends the member with every guild reaction-add, so no members intent is needed.
        A thread the client has not cached is fetched.
        """
        if payload.guild_id is None or payload.member is None:
            return None
        guild = self.bot.get_guild(payload.guild_id)
        if guild is None:
            return None
        channel = guild.get_channel_or_thread(payload.channel_id)
        if channel is None:
            try:
                channel = await guild.fetch_channel(payload.channel_id)
            except discord.HTTPException as error:
                log.warning("reaction in channel %s not counted: the channel cannot be read "
                            "(%s)", payload.channel_id, error)
                return None
        member = payload.member
        if is_moderator(member, channel.permissions_for(member), self.bot.settings):
            return member
        return None

    def _mine(self, payload: discord.RawReactionActionEvent) -> bool:
        return self.bot.user is not None and payload.user_id == self.bot.user.id

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        value = rating_of(payload.emoji)
        if value is None or self._mine(payload):
            return
        moderator = await self._moderator(payload)
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
        try:  # taking off another's reaction needs Manage Messages (optional): else leave it
            if channel is not None and permissions.may(channel, "manage_messages"):
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
        value = rating_of(payload.emoji)
        if value is None or self._mine(payload):
            return
        if payload.guild_id is None:
            return
        answer = await self.actions.withdraw_reply(payload.guild_id, payload.message_id,
                                                   payload.user_id, value)
        if answer is not None:
            log.info("reaction removed on message %s: %s", payload.message_id, answer.text)

    @commands.Cog.listener()
    async def on_raw_reaction_clear(self, payload: discord.RawReactionClearEvent) -> None:
        """Someone removed every reaction from a message: its ratings go with them."""
        await self._cleared(payload.guild_id, payload.message_id, None)

    @commands.Cog.listener()
    async def on_raw_reaction_clear_emoji(self, payload: discord.RawReactionClearEmojiEvent
                                          ) -> None:
        """Someone removed every 👍 (or 👎) from a message: the ratings of that value go."""
        value = rating_of(payload.emoji)
        if value is not None:
            await self._cleared(payload.guild_id, payload.message_id, value)

    async def _cleared(self, guild_id: int | None, message_id: int, value: int | None) -> None:
        if guild_id is None:
            return
        answer = await clear_ratings(self.actions, guild_id, message_id, value)
        if answer is not None:
            log.info("reactions cleared on message %s: %s", message_id, answer.text)

    # --- teach --------------------------------------------------------------------------------

    async def teach(self, interaction: discord.Interaction, message: discord.Message) -> None:
        try:
            async with asyncio.timeout(TEACH_LOOKUP_S):
                exchange = await self.actions.exchange_of_message(message.id)
        except TimeoutError:
            log.warning("teach menu: looking up message %s took over %g s", message.id,
                        TEACH_LOOKUP_S)
            await interaction.response.send_message(TEACH_SLOW, ephemeral=True)
            return
        if exchange is None:
            await interaction.response.send_message(
                "That is not one of my replies that I still remember.", ephemeral=True)
            return
        await interaction.response.send_modal(TeachModal(self.actions, exchange, interaction,
                                                         self.open_forms))

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A teach form submitted after it expired (or after a restart) reaches no open form:
        the moderator is told, with their text to copy, instead of Discord's bare failure."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data = interaction.data or {}
        custom_id = str(data.get("custom_id", ""))
        if not custom_id.startswith(TEACH_PREFIX) or custom_id in self.open_forms:
            return
        text = submitted_text(data.get("components", []))
        try:
            await interaction.response.send_message(
                TEACH_LATE + quoted(text, 2000 - len(TEACH_LATE) - 20), ephemeral=True)
        except (discord.HTTPException, discord.InteractionResponded) as error:
            log.info("could not answer an expired teach form: %s", error)


async def setup(bot) -> None:
    await bot.add_cog(Ratings(bot))
