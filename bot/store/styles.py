"""Admins' choices per channel and server: style prefixes and the channels the bot chats in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import redis.asyncio as aioredis

from bot.store.keys import Keys
from bot.store.records import StoreError, Style

Scope = Literal["channel", "guild"]


class Styles:
    """The voice prefix of the replies: a channel's own, else its server's."""

    def __init__(self, client: aioredis.Redis, keys: Keys, user_hash: Callable[[object], str]):
        self.r, self.keys, self.user_hash = client, keys, user_hash

    def _key(self, scope: str, scope_id: int | str) -> str:
        if scope not in ("channel", "guild"):
            raise StoreError(f"a style scope is channel or guild, not {scope!r}")
        return self.keys.style(scope, scope_id)

    async def set(self, scope: Scope, scope_id: int | str, prefix: str,
                  set_by: int | str | None = None) -> Style:
        key = self._key(scope, scope_id)  # refuses an unknown scope first
        style = Style(prefix=prefix, scope=scope,
                      set_by=self.user_hash(set_by) if set_by is not None else None)
        await self.r.set(key, style.model_dump_json())
        return style

    async def clear(self, scope: Scope, scope_id: int | str) -> bool:
        return bool(await self.r.delete(self._key(scope, scope_id)))

    async def get(self, scope: Scope, scope_id: int | str) -> Style | None:
        """The style set on exactly this channel or server."""
        raw = await self.r.get(self._key(scope, scope_id))
        return Style.model_validate_json(raw) if raw is not None else None

    async def in_force(self, guild_id: int | str | None,
                       channel_id: int | str | None) -> Style | None:
        """The style in force in a channel: the channel's own, else its server's."""
        keys = []
        if channel_id is not None:
            keys.append(self._key("channel", channel_id))
        if guild_id is not None:
            keys.append(self._key("guild", guild_id))
        for raw in (await self.r.mget(keys)) if keys else []:
            if raw is not None:
                return Style.model_validate_json(raw)
        return None


class ChatChannels:
    """Channels where the bot answers every message, not only mentions and replies."""

    def __init__(self, client: aioredis.Redis, keys: Keys):
        self.r, self.keys = client, keys

    async def set(self, channel_id: int | str, on: bool) -> None:
        if on:
            await self.r.sadd(self.keys.chat_channels, channel_id)
        else:
            await self.r.srem(self.keys.chat_channels, channel_id)

    async def is_on(self, channel_id: int | str) -> bool:
        return bool(await self.r.sismember(self.keys.chat_channels, channel_id))
