"""Admins' choices per channel and server: style prefixes and the channels the bot chats in.

A thread (a forum post too) has none of its own unless set on it: it follows its parent
channel, which follows the server. Thread ids are channel ids in Discord, so a thread's own
choice is kept under the channel scope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import redis.asyncio as aioredis

from bot.core.store.keys import Keys
from bot.core.store.records import StoreError, Style

Scope = Literal["channel", "guild"]


class Styles:
    """The voice prefix of the replies: a channel's own, else its server's."""

    def __init__(self, client: aioredis.Redis, keys: Keys, user_hash: Callable[[object], str]):
        self._redis, self.keys, self.user_hash = client, keys, user_hash

    def _key(self, scope: str, scope_id: int | str) -> str:
        if scope not in ("channel", "guild"):
            raise StoreError(f"a style scope is channel or guild, not {scope!r}")
        return self.keys.style(scope, scope_id)

    async def set(self, scope: Scope, scope_id: int | str, prefix: str,
                  set_by: int | str | None = None) -> Style:
        key = self._key(scope, scope_id)  # refuses an unknown scope first
        style = Style(prefix=prefix, scope=scope,
                      set_by=self.user_hash(set_by) if set_by is not None else None)
        await self._redis.set(key, style.model_dump_json())
        return style

    async def clear(self, scope: Scope, scope_id: int | str) -> bool:
        return bool(await self._redis.delete(self._key(scope, scope_id)))

    async def get(self, scope: Scope, scope_id: int | str) -> Style | None:
        """The style set on exactly this channel or server."""
        raw = await self._redis.get(self._key(scope, scope_id))
        return Style.model_validate_json(raw) if raw is not None else None

    async def in_force(self, guild_id: int | str | None, channel_id: int | str | None,
                       parent_id: int | str | None = None) -> Style | None:
        """The style in force in a channel: its own, else (in a thread) its parent channel's,
        else its server's."""
        keys = [self._key("channel", i) for i in (channel_id, parent_id) if i is not None]
        if guild_id is not None:
            keys.append(self._key("guild", guild_id))
        for raw in (await self._redis.mget(keys)) if keys else []:
            if raw is not None:
                return Style.model_validate_json(raw)
        return None

    async def forget_setter(self, user_hash: str) -> int:
        """Remove this admin (by hash) from the styles they set (the styles stay); returns how
        many. Styles are few, so they are found by a scan of their keys."""
        count = 0
        async for key in self._redis.scan_iter(match=self.keys("style", "*"), count=1000):
            raw = await self._redis.get(key)
            if raw is None:
                continue
            style = Style.model_validate_json(raw)
            if style.set_by == user_hash:
                await self._redis.set(key, style.model_copy(update={"set_by": None})
                                 .model_dump_json(), xx=True, keepttl=True)
                count += 1
        return count


class ChatChannels:
    """Channels where the bot answers every message, not only mentions and replies."""

    def __init__(self, client: aioredis.Redis, keys: Keys):
        self._redis, self.keys = client, keys

    async def set(self, channel_id: int | str, on: bool) -> None:
        if on:
            await self._redis.sadd(self.keys.chat_channels, channel_id)
        else:
            await self._redis.srem(self.keys.chat_channels, channel_id)

    async def is_on(self, channel_id: int | str, parent_id: int | str | None = None) -> bool:
        """Whether the bot answers every message here: turned on for this channel, or (in a
        thread) for its parent channel."""
        ids = [i for i in (channel_id, parent_id) if i is not None]
        return any(await self._redis.smismember(self.keys.chat_channels, ids))
