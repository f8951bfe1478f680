"""Who counts as a moderator or an admin, and the app-command checks that enforce it.

Moderator: the MODERATOR_ROLE role or Manage Messages (admins count too).
Admin: the ADMIN_ROLE role or Manage Server.
A role setting names the role or gives its id (a renamed role keeps its id).

These checks decide; the commands' `default_member_permissions` only choose whom Discord shows
them to.
"""

from __future__ import annotations

import discord
from discord import app_commands


class NotModerator(app_commands.CheckFailure):
    def __init__(self):
        super().__init__("Only moderators can do that.")


class NotAdmin(app_commands.CheckFailure):
    def __init__(self):
        super().__init__("Only server admins can do that.")


def _has_role(member: discord.abc.User, name_or_id: str | None) -> bool:
    """Whether the member has the role of that name or that id."""
    return bool(name_or_id) and isinstance(member, discord.Member) and any(
        role.name == name_or_id or str(role.id) == name_or_id for role in member.roles)


def is_admin(member: discord.abc.User, permissions: discord.Permissions, settings) -> bool:
    """`permissions` are the member's in the channel at hand (interaction or reaction)."""
    if not isinstance(member, discord.Member):
        return False  # no one administers a DM
    return permissions.manage_guild or _has_role(member, settings.admin_role)


def is_moderator(member: discord.abc.User, permissions: discord.Permissions, settings) -> bool:
    if not isinstance(member, discord.Member):
        return False
    return (permissions.manage_messages or _has_role(member, settings.moderator_role)
            or is_admin(member, permissions, settings))


async def _admin_predicate(interaction: discord.Interaction) -> bool:
    if is_admin(interaction.user, interaction.permissions, interaction.client.settings):
        return True
    raise NotAdmin()


async def _moderator_predicate(interaction: discord.Interaction) -> bool:
    if is_moderator(interaction.user, interaction.permissions, interaction.client.settings):
        return True
    raise NotModerator()


def admin_only():
    """App-command check: Manage Server or the admin role (either one suffices)."""
    return app_commands.check(_admin_predicate)


def moderator_only():
    """App-command check: Manage Messages or the moderator role (or an admin)."""
    return app_commands.check(_moderator_predicate)
