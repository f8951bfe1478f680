"""How often one person is answered: one reply per COOLDOWN_SECONDS, shared by every shard and
process through the store."""

from __future__ import annotations

from bot.core.store import Store


class Cooldowns:
    def __init__(self, store: Store, seconds: float):
        self.store = store
        self.seconds = seconds

    async def claim(self, user_id: int | str, purpose: str = "reply") -> bool:
        """True when this user may be answered now (and starts their cooldown).

        Kept in Redis with SET NX PX, so every shard and process shares one cooldown per user;
        the key is `P:cd:{purpose}:{user_hash}` and expires by itself. A second purpose
        ("notice") lets a front end say "wait" once per window instead of to every message.
        """
        if self.seconds <= 0:
            return True
        return await self.store.claim("cd", purpose, self.store.user_hash(user_id),
                                      ttl_s=self.seconds)
