"""`Store`: one Redis connection, the schema check, user hashing, and the focused stores on it.

    store.exchanges   exchanges by id or message, forgetting them (exchange_records.py), and
                      their ratings and corrections (exchanges.py)
    store.styles      style prefixes per channel and server (styles.py)
    store.chat        channels where the bot answers every message (styles.py)
    store.registry    adapter versions by name: bytes, records, reports; the default tenant;
                      change events (registry.py)
    store.tenant(id)  one server's own data: .exchanges (rating, teaching, its rated exchanges
                      and counters), .registry (its active pointer, history, versions),
                      .trainer (its cursor, lock, "train now", recent runs), .trust
                      (distrusted moderators, the review queue, exam pins: trust.py),
                      .canary (a promoted adapter on trial: canary.py),
                      .modlog channel

`store.forget_user`, `store.forget_messages` and `store.forget_channel` remove a person's data,
deleted Discord messages and deleted channels or threads (privacy.py). Every key is named by
bot/core/store/keys.py, which documents the layout.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from bot.core.store.canary import Canaries
from bot.core.store.client import Acknowledgement, connect
from bot.core.store.exchanges import Exchanges
from bot.core.store.keys import SCHEMA_VERSION, Keys
from bot.core.store.migrate import index_channels, migrate_from_1
from bot.core.store.privacy import (
    Deleted,
    Forgotten,
    forget_channel,
    forget_messages,
    forget_user,
)
from bot.core.store.records import StoreError
from bot.core.store.registry import Registry
from bot.core.store.styles import ChatChannels, Styles
from bot.core.store.trainer_state import TrainerState
from bot.core.store.trust import Trust

log = logging.getLogger(__name__)

# maxmemory-policy values under which Redis deletes keys by itself when it is full.
EVICTING_POLICIES = ("allkeys-", "volatile-")

# What a store call raises when Redis cannot be reached or refuses the command (down, wrong
# password, no free connection within REDIS_POOL_TIMEOUT_SECONDS, out of memory, ...): every
# front end catches it and answers with a short apology instead of a traceback.
StoreUnavailable = RedisError


class TenantStore:
    """What one tenant (server) owns; every act through it stays inside that tenant."""

    def __init__(self, store: Store, tenant: int):
        redis, keys = store._redis, store.keys.of(tenant)
        self.tenant = tenant
        self.exchanges = Exchanges(redis, keys, store.user_hash, store.exchanges.unrated_ttl_s)
        self.registry = Registry(redis, keys)
        self.trainer = TrainerState(redis, keys)
        self.trust = Trust(redis, keys, store.user_hash)
        self.canary = Canaries(redis, keys)
        self._redis, self._keys = redis, keys

    async def modlog_channel(self) -> int | None:
        """The channel where this server's adapter changes are posted (None: not set here)."""
        raw = await self._redis.get(self._keys.modlog)
        return int(raw) if raw is not None else None

    async def set_modlog_channel(self, channel_id: int | None) -> None:
        if channel_id is None:
            await self._redis.delete(self._keys.modlog)
        else:
            await self._redis.set(self._keys.modlog, channel_id)


class Store:
    """Async access to everything the bot and the trainer keep in Redis."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, user_secret: str,
                 unrated_ttl_days: int = 30, home_tenant: int | None = None):
        self._redis = client
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.home_tenant = home_tenant  # HOME_GUILD_ID: where schema 1 data moves
        self._secret = user_secret.encode()
        self.exchanges = Exchanges(client, self.keys, self.user_hash,
                                   int(unrated_ttl_days * 86400))
        self.styles = Styles(client, self.keys, self.user_hash)
        self.chat = ChatChannels(client, self.keys)
        self.registry = Registry(client, self.keys)

    @classmethod
    def from_settings(cls, settings) -> Store:
        """A store on REDIS_URL (plain or Sentinel) through the bounded pool of
        bot/core/store/client.py.

        redis-py's default pool refuses a command outright (MaxConnectionsError) once 100 are
        in flight; this one holds at most REDIS_MAX_CONNECTIONS and makes a command wait up to
        REDIS_POOL_TIMEOUT_SECONDS for one (then redis ConnectionError, which callers handle).
        With REDIS_WAIT_REPLICAS, a write returns once that many replicas have it.
        """
        keys = Keys(settings.key_prefix)
        acknowledgement = None
        if settings.redis_wait_replicas:
            acknowledgement = Acknowledgement(settings.redis_wait_replicas,
                                              settings.redis_wait_timeout_ms, keys.write_fence)
        client = connect(settings.redis_url, max_connections=settings.redis_max_connections,
                         pool_timeout_s=settings.redis_pool_timeout_seconds,
                         acknowledgement=acknowledgement)
        return cls(client, prefix=settings.key_prefix,
                   user_secret=settings.user_hash_secret.get_secret_value(),
                   unrated_ttl_days=settings.unrated_ttl_days,
                   home_tenant=settings.home_guild_id)

    def tenant(self, tenant: int) -> TenantStore:
        return TenantStore(self, tenant)

    async def tenants(self) -> list[int]:
        """Every tenant with exchanges or adapters, in id order."""
        return sorted(int(t) for t in await self._redis.smembers(self.keys.tenants))

    async def close(self) -> None:
        await self._redis.aclose()

    async def delete_all_keys(self) -> int:
        """Remove every key under this store's prefix (a demo's own prefix, at its end);
        returns how many went."""
        deleted = 0
        async for key in self._redis.scan_iter(match=self.keys("*"), count=500):
            deleted += await self._redis.delete(key)
        return deleted

    async def ping(self) -> None:
        """Check the connection and record (or verify) the schema version; data of schema 1
        is moved to schema 2 once, and exchanges stored before the channel index are put in it
        once (see bot/core/store/migrate.py)."""
        await self._redis.ping()
        await self._refuse_eviction()
        stored = await self._redis.set(self.keys("schema"), SCHEMA_VERSION, nx=True, get=True)
        if stored is not None and int(stored) == 1:
            await migrate_from_1(self)
        elif stored is not None and int(stored) != SCHEMA_VERSION:
            raise StoreError(f"Redis holds schema version {int(stored)} under prefix "
                             f"{self.prefix!r}; this code speaks version {SCHEMA_VERSION}")
        if not await self._redis.exists(self.keys("indexed", "channels")):
            count = await index_channels(self)
            if count:
                log.info("indexed %d stored exchange(s) by channel", count)

    async def _refuse_eviction(self) -> None:
        """Refuse a Redis that may evict keys when full: it would drop adapters, the active
        pointers, the schema key and ratings without a word (the bot would fall back to the
        base model). Where CONFIG is disabled (managed Redis) the policy cannot be read."""
        try:
            found = await self._redis.config_get("maxmemory-policy")
        except ResponseError:
            log.warning("cannot read Redis's maxmemory-policy (CONFIG is disabled): make sure "
                        "it is noeviction, or adapters and ratings may be evicted")
            return
        policy = next(iter(found.values()), b"noeviction")
        policy = policy.decode() if isinstance(policy, bytes) else str(policy)
        if policy.startswith(EVICTING_POLICIES):
            raise StoreError(f"Redis's maxmemory-policy is {policy}: it evicts keys when full "
                             "(adapters, the active pointer, ratings); set maxmemory-policy "
                             "noeviction in redis.conf")

    async def forget_user(self, user_id: int | str) -> Forgotten:
        """Delete everything of this person, in every server (see bot/core/store/privacy.py)."""
        return await forget_user(self, user_id)

    async def forget_messages(self, message_ids) -> Deleted:
        """Apply deleted Discord messages (see bot/core/store/privacy.py)."""
        return await forget_messages(self, message_ids)

    async def forget_channel(self, tenant: int, channel_id: int) -> int:
        """Apply a deleted channel or thread (see bot/core/store/privacy.py)."""
        return await forget_channel(self, tenant, channel_id)

    async def write_heartbeat(self, process: str, beat: dict, ttl_s: float) -> None:
        """One bot process (see keys.gateway_process) says how its Discord connection is
        (JSON, expires)."""
        await self._redis.set(self.keys.heartbeat(process), json.dumps(beat),
                              px=max(1, int(ttl_s * 1000)))

    async def heartbeat(self, process: str) -> dict | None:
        """The last heartbeat of that bot process (None: none, or it expired)."""
        raw = await self._redis.get(self.keys.heartbeat(process))
        return json.loads(raw) if raw is not None else None

    async def take_identify_slot(self, bucket: int, window_s: float) -> float:
        """Claim IDENTIFY rate-limit `bucket` for `window_s`, shared by every bot process:
        0.0 when claimed now, else the seconds until the current holder's claim runs out."""
        key = self.keys.identify_slot(bucket)
        if await self._redis.set(key, b"1", nx=True, px=max(1, int(window_s * 1000))):
            return 0.0
        left_ms = await self._redis.pttl(key)
        return max(left_ms, 1) / 1000  # -2: it expired meanwhile; try again at once

    def user_hash(self, user_id: int | str) -> str:
        return hmac.new(self._secret, str(user_id).encode(), hashlib.sha256).hexdigest()

    async def claim(self, *parts: object, ttl_s: float) -> bool:
        """True for the first caller to claim key P:parts within `ttl_s` (SET NX with expiry).

        One claim is shared by every bot process: per-user cooldowns, one mod-log post per change.
        """
        return bool(await self._redis.set(self.keys(*parts), b"1", nx=True,
                                     px=max(1, int(ttl_s * 1000))))
