"""What the bot itself may do in a channel, checked before it tries: a write Discord refuses
costs a wasted generation and a 403, and 403s count toward Discord's invalid-request limit.

Needed to answer: View Channel and Send Messages (Send Messages in Threads in a thread).
Optional (docs/discord-setup.md): Read Message History (earlier messages as context, and
finding messages deleted while the bot was not connected: cogs/catchup.py), Add
Reactions (👍/👎 under replies), Manage Messages (taking off a moderator's reaction whose rating
could not be stored).
"""

from __future__ import annotations

import discord

NEEDED = {"view_channel": "View Channel", "send_messages": "Send Messages"}
NEEDED_IN_THREADS = {"view_channel": "View Channel",
                     "send_messages_in_threads": "Send Messages in Threads"}
OPTIONAL = {"read_message_history": "Read Message History (earlier messages as context)",
            "add_reactions": "Add Reactions (👍/👎 under replies for ratings)"}


def own_permissions(channel) -> discord.Permissions | None:
    """The bot's permissions in `channel` (None in a DM: everything a DM allows)."""
    guild = getattr(channel, "guild", None)
    if guild is None or guild.me is None:
        return None
    return channel.permissions_for(guild.me)


def _lacking(permissions: discord.Permissions | None, wanted: dict[str, str]) -> list[str]:
    if permissions is None:
        return []
    return [name for flag, name in wanted.items() if not getattr(permissions, flag)]


def missing_to_answer(channel, permissions: discord.Permissions | None = None) -> list[str]:
    """The names of the permissions the bot lacks to answer in `channel` (empty: it can)."""
    permissions = permissions if permissions is not None else own_permissions(channel)
    needed = NEEDED_IN_THREADS if isinstance(channel, discord.Thread) else NEEDED
    return _lacking(permissions, needed)


def missing_optional(channel, permissions: discord.Permissions | None = None) -> list[str]:
    """The optional permissions the bot lacks in `channel`, each with what it is for."""
    permissions = permissions if permissions is not None else own_permissions(channel)
    return _lacking(permissions, OPTIONAL)


def may(channel, flag: str) -> bool:
    """Whether the bot has permission `flag` in `channel` (always, in a DM)."""
    permissions = own_permissions(channel)
    return permissions is None or bool(getattr(permissions, flag))


def cannot_answer_text(missing: list[str]) -> str:
    """Why `/chat on` changed nothing: the permissions the bot lacks to answer here."""
    return (f"Nothing changed: I cannot answer here without {', '.join(missing)}. Give me "
            "that in this channel's permissions, then run /chat on again.")


def optional_note(missing: list[str]) -> str:
    """A line for answers where the bot works, but with less than it could."""
    return "\nNote: I also lack " + "; ".join(missing) + "." if missing else ""
