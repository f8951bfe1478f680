"""The Redis data layer: exchanges, ratings, corrections, styles, adapters, events, trainer state.

Redis holds JSON strings and raw bytes only, never pickles. Schema version 1; every key starts
with the `KEY_PREFIX` setting (`P` below):

    P:schema                     "1"
    P:ex:{id}                    JSON Exchange; expires after UNRATED_TTL_DAYS until first rated
    P:ex:msg:{message_id}        id of the exchange whose reply is that Discord message (same TTL)
    P:ex:all                     zset  exchange id -> created_at
    P:ex:user:{user_hash}        set   exchange ids of one user (for forget_user)
    P:rt:{id}                    hash  moderator_hash -> "1" | "-1" (one rating per moderator)
    P:co:{id}                    hash  moderator_hash -> JSON Correction (one per moderator)
    P:rated                      zset  exchange id -> time of its latest rating or correction
    P:style:guild:{guild_id}     JSON Style
    P:style:channel:{channel_id} JSON Style (overrides the guild's)
    P:chat:channels              set   channel ids where the bot answers every message
    P:ad:seq                     counter for adapter versions v1, v2, ...
    P:ad:{version}:meta          JSON AdapterRecord (with sha256 of the blob)
    P:ad:{version}:blob          safetensors bytes of the adapter
    P:ad:{version}:report        JSON training report
    P:ad:{version}:plot          PNG bytes of the loss curve
    P:ad:all                     zset  version -> created_at
    P:ad:active                  the version in service (absent: "base")
    P:ad:history                 list  versions that were active before, newest first
    P:ev:ratings                 stream of rating events (rate, withdraw, correct, import)
    P:ev:adapter                 pub/sub channel of adapter changes (JSON)
    P:tr:cursor                  id of the last rating event a finished training cycle used
    P:tr:lock                    token of the trainer holding the training lock (with a TTL)
    P:tr:request                 JSON "train now" request from the bot
    P:tr:runs                    list  JSON outcomes of recent training cycles, newest first
    P:cd:{purpose}:{user_hash}   per-user cooldown of the bot ("reply", "notice"); expires
    P:modlog:{kind}:{ver}:{prev} an adapter change already posted to the mod log; expires

User ids are stored only as an HMAC-SHA256 under USER_HASH_SECRET.
The aggregate score of an exchange is the sum of its ratings hash, never stored twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from bot.dialogue import Turn

SCHEMA_VERSION = 1
BASE_VERSION = "base"
RUNS_KEPT = 50
RATING_STREAM_MAXLEN = 100_000


class StoreError(Exception):
    """A request the store cannot carry out; the message says why."""


class UnknownExchange(StoreError):
    def __init__(self, exchange_id: str):
        super().__init__(f"no exchange with id {exchange_id!r} (it may have expired or been "
                         "forgotten)")
        self.exchange_id = exchange_id


class UnknownAdapter(StoreError):
    def __init__(self, version: str):
        super().__init__(f"no adapter version {version!r} in the registry")
        self.version = version


class AdapterCorrupt(StoreError):
    """The stored adapter bytes do not match their recorded sha256."""


class TurnRecord(BaseModel):
    role: Literal["user", "bot"]
    text: str

    def as_turn(self) -> Turn:
        return Turn(self.role, self.text)


class Exchange(BaseModel):
    """One user message and the bot's reply, with what produced it."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: Literal["discord", "console", "import"] = "discord"
    guild_id: int | None = None
    channel_id: int | None = None
    message_id: int | None = None  # the bot's reply message
    user_message_id: int | None = None
    user_hash: str | None = None
    context: list[TurnRecord] = []  # earlier turns, oldest first
    user_message: str
    style: str | None = None
    reply: str
    adapter_version: str = BASE_VERSION
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    reply_tokens: int = 0
    created_at: float = Field(default_factory=time.time)

    def turns(self) -> list[Turn]:
        """The dialogue the reply answered: context then the user's message."""
        return [t.as_turn() for t in self.context] + [Turn("user", self.user_message)]


class Correction(BaseModel):
    """A moderator's better reply for an exchange ("teach")."""

    exchange_id: str
    moderator_hash: str
    text: str
    created_at: float = Field(default_factory=time.time)


class Style(BaseModel):
    prefix: str
    scope: Literal["channel", "guild"]
    set_by: str | None = None  # HMAC of the admin's id
    set_at: float = Field(default_factory=time.time)


class RatedExchange(BaseModel):
    """An exchange with its derived moderator score and its corrections."""

    exchange: Exchange
    score: int
    ratings: int
    corrections: list[Correction]


class AdapterRecord(BaseModel):
    """What the registry knows of one adapter version."""

    version: str = ""
    parent: str | None = None
    base_model: str
    hyperparameters: dict = {}
    trials: list[dict] = []
    metrics: dict = {}
    data: dict = {}  # counts: train/validation examples, corrections, ...
    sha256: str = ""
    size_bytes: int = 0
    created_at: float = Field(default_factory=time.time)


class AdapterEvent(BaseModel):
    kind: Literal["activated", "rollback"]
    version: str
    previous: str


# Rating in one round trip: refuse unknown exchanges, set this moderator's field, keep the
# exchange (and its message index) from expiring, and log the event; all or nothing.
_RATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('UNKNOWN_EXCHANGE') end
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('PERSIST', KEYS[1])
  if KEYS[5] ~= '' then redis.call('PERSIST', KEYS[5]) end
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'exchange', ARGV[4], 'kind', ARGV[5],
           'moderator', ARGV[1])
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do total = total + tonumber(v) end
return total
"""

_CORRECT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('UNKNOWN_EXCHANGE') end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PERSIST', KEYS[1])
if KEYS[5] ~= '' then redis.call('PERSIST', KEYS[5]) end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'exchange', ARGV[4], 'kind', 'correct',
           'moderator', ARGV[1])
return 1
"""

# Move the active pointer: optionally only from an expected version (compare-and-set).
_ACTIVATE = """
local current = redis.call('GET', KEYS[1]) or 'base'
if ARGV[2] ~= '' and ARGV[2] ~= current then
  return redis.error_reply('ACTIVE_CHANGED ' .. current)
end
if ARGV[1] == current then return current end
redis.call('LPUSH', KEYS[2], current)
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[3], (ARGV[3]:gsub('__PREVIOUS__', current)))
return current
"""

_ROLLBACK = """
local previous = redis.call('LPOP', KEYS[2])
if not previous then return redis.error_reply('NO_HISTORY') end
local current = redis.call('GET', KEYS[1]) or 'base'
redis.call('SET', KEYS[1], previous)
redis.call('PUBLISH', KEYS[3],
           (ARGV[1]:gsub('__VERSION__', previous):gsub('__PREVIOUS__', current)))
return previous
"""

_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Store:
    """Async access to everything the bot and the trainer keep in Redis."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, user_secret: str,
                 unrated_ttl_days: int = 30):
        self.r = client
        self.prefix = prefix
        self._secret = user_secret.encode()
        self.unrated_ttl_s = int(unrated_ttl_days * 86400)
        self._rate = client.register_script(_RATE)
        self._correct = client.register_script(_CORRECT)
        self._activate = client.register_script(_ACTIVATE)
        self._rollback = client.register_script(_ROLLBACK)
        self._renew = client.register_script(_RENEW_LOCK)
        self._release = client.register_script(_RELEASE_LOCK)

    @classmethod
    def from_settings(cls, settings) -> Store:
        client = aioredis.from_url(settings.redis_url, decode_responses=False)
        return cls(client, prefix=settings.key_prefix,
                   user_secret=settings.user_hash_secret.get_secret_value(),
                   unrated_ttl_days=settings.unrated_ttl_days)

    def k(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    async def close(self) -> None:
        await self.r.aclose()

    async def ping(self) -> None:
        """Check the connection and record (or verify) the schema version."""
        await self.r.ping()
        stored = await self.r.set(self.k("schema"), SCHEMA_VERSION, nx=True, get=True)
        if stored is not None and int(stored) != SCHEMA_VERSION:
            raise StoreError(f"Redis holds schema version {int(stored)} under prefix "
                             f"{self.prefix!r}; this code speaks version {SCHEMA_VERSION}")

    def user_hash(self, user_id: int | str) -> str:
        return hmac.new(self._secret, str(user_id).encode(), hashlib.sha256).hexdigest()

    # --- exchanges ----------------------------------------------------------------------------

    async def add_exchange(self, exchange: Exchange, *, user_id: int | str | None = None,
                           keep: bool = False) -> Exchange:
        """Store an exchange; `user_id` is hashed. Unrated ones expire unless `keep`."""
        if user_id is not None:
            exchange = exchange.model_copy(update={"user_hash": self.user_hash(user_id)})
        ttl = None if keep else self.unrated_ttl_s
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.k("ex", exchange.id), exchange.model_dump_json(), ex=ttl)
            if exchange.message_id is not None:
                pipe.set(self.k("ex", "msg", exchange.message_id), exchange.id, ex=ttl)
            pipe.zadd(self.k("ex", "all"), {exchange.id: exchange.created_at})
            if exchange.user_hash:
                pipe.sadd(self.k("ex", "user", exchange.user_hash), exchange.id)
            await pipe.execute()
        return exchange

    async def exchange_exists(self, exchange_id: str) -> bool:
        return bool(await self.r.exists(self.k("ex", exchange_id)))

    async def get_exchange(self, exchange_id: str) -> Exchange:
        raw = await self.r.get(self.k("ex", exchange_id))
        if raw is None:
            raise UnknownExchange(exchange_id)
        return Exchange.model_validate_json(raw)

    async def exchange_for_message(self, message_id: int) -> Exchange | None:
        """The exchange whose reply is this Discord message, if the bot still knows it."""
        exchange_id = await self.r.get(self.k("ex", "msg", message_id))
        if exchange_id is None:
            return None
        try:
            return await self.get_exchange(exchange_id.decode())
        except UnknownExchange:
            return None

    async def get_exchanges(self, ids: Iterable[str]) -> list[Exchange]:
        """The exchanges of these ids that still exist, in the same order."""
        ids = list(ids)
        if not ids:
            return []
        raws = await self.r.mget([self.k("ex", i) for i in ids])
        return [Exchange.model_validate_json(raw) for raw in raws if raw is not None]

    async def count_exchanges(self) -> int:
        return await self.r.zcard(self.k("ex", "all"))

    # --- ratings and corrections ----------------------------------------------------------------

    async def _rating_call(self, exchange_id: str, moderator_id: int | str, value: int,
                           kind: str) -> int:
        # The message index key is only known from the exchange; read it to keep it alive too.
        raw = await self.r.get(self.k("ex", exchange_id))
        if raw is None:
            raise UnknownExchange(exchange_id)
        message_id = Exchange.model_validate_json(raw).message_id
        msg_key = self.k("ex", "msg", message_id) if message_id is not None else ""
        keys = [self.k("ex", exchange_id), self.k("rt", exchange_id), self.k("rated"),
                self.k("ev", "ratings"), msg_key]
        args = [self.user_hash(moderator_id), str(value), time.time(), exchange_id, kind,
                RATING_STREAM_MAXLEN]
        try:
            return int(await self._rate(keys=keys, args=args))
        except aioredis.ResponseError as error:
            if "UNKNOWN_EXCHANGE" in str(error):
                raise UnknownExchange(exchange_id) from None
            raise

    async def rate(self, exchange_id: str, moderator_id: int | str, value: int) -> int:
        """Set this moderator's rating (+1 or -1), replacing an earlier one; returns the score."""
        if value not in (1, -1):
            raise StoreError(f"a rating is +1 or -1, not {value!r}")
        return await self._rating_call(exchange_id, moderator_id, value,
                                       "up" if value > 0 else "down")

    async def withdraw_rating(self, exchange_id: str, moderator_id: int | str) -> int:
        """Remove this moderator's rating, if any; returns the score."""
        return await self._rating_call(exchange_id, moderator_id, 0, "withdraw")

    async def ratings(self, exchange_id: str) -> dict[str, int]:
        raw = await self.r.hgetall(self.k("rt", exchange_id))
        return {key.decode(): int(value) for key, value in raw.items()}

    async def score(self, exchange_id: str) -> int:
        return sum((await self.ratings(exchange_id)).values())

    async def add_correction(self, exchange_id: str, moderator_id: int | str,
                             text: str) -> Correction:
        """Store a moderator's better reply, replacing that moderator's earlier one."""
        text = text.strip()
        if not text:
            raise StoreError("a correction needs the text of the better reply")
        raw = await self.r.get(self.k("ex", exchange_id))
        if raw is None:
            raise UnknownExchange(exchange_id)
        message_id = Exchange.model_validate_json(raw).message_id
        correction = Correction(exchange_id=exchange_id,
                                moderator_hash=self.user_hash(moderator_id), text=text)
        keys = [self.k("ex", exchange_id), self.k("co", exchange_id), self.k("rated"),
                self.k("ev", "ratings"),
                self.k("ex", "msg", message_id) if message_id is not None else ""]
        args = [correction.moderator_hash, correction.model_dump_json(), correction.created_at,
                exchange_id, RATING_STREAM_MAXLEN]
        try:
            await self._correct(keys=keys, args=args)
        except aioredis.ResponseError as error:
            if "UNKNOWN_EXCHANGE" in str(error):
                raise UnknownExchange(exchange_id) from None
            raise
        return correction

    async def corrections(self, exchange_id: str) -> list[Correction]:
        raw = await self.r.hgetall(self.k("co", exchange_id))
        found = [Correction.model_validate_json(value) for value in raw.values()]
        return sorted(found, key=lambda c: c.created_at)

    async def rated_exchanges(self, limit: int | None = None) -> list[RatedExchange]:
        """Every exchange with a rating or a correction, newest first (up to `limit`)."""
        end = -1 if limit is None else limit - 1
        ids = [i.decode() for i in await self.r.zrevrange(self.k("rated"), 0, end)]
        exchanges = await self.get_exchanges(ids)
        async with self.r.pipeline(transaction=False) as pipe:  # one round trip for all
            for exchange in exchanges:
                pipe.hvals(self.k("rt", exchange.id))
                pipe.hvals(self.k("co", exchange.id))
            replies = await pipe.execute()
        result = []
        for exchange, votes, corrections in zip(exchanges, replies[::2], replies[1::2],
                                                strict=True):
            result.append(RatedExchange(
                exchange=exchange, score=sum(int(v) for v in votes), ratings=len(votes),
                corrections=sorted((Correction.model_validate_json(c) for c in corrections),
                                   key=lambda c: c.created_at)))
        return result

    # --- styles and chat channels ---------------------------------------------------------------

    def _style_key(self, scope: str, scope_id: int | str) -> str:
        if scope not in ("channel", "guild"):
            raise StoreError(f"a style scope is channel or guild, not {scope!r}")
        return self.k("style", scope, scope_id)

    async def set_style(self, scope: Literal["channel", "guild"], scope_id: int | str,
                        prefix: str, set_by: int | str | None = None) -> Style:
        key = self._style_key(scope, scope_id)
        style = Style(prefix=prefix, scope=scope,
                      set_by=self.user_hash(set_by) if set_by is not None else None)
        await self.r.set(key, style.model_dump_json())
        return style

    async def clear_style(self, scope: Literal["channel", "guild"], scope_id: int | str) -> bool:
        return bool(await self.r.delete(self._style_key(scope, scope_id)))

    async def style_for(self, guild_id: int | str | None,
                        channel_id: int | str | None) -> Style | None:
        """The style in force in a channel: the channel's own, else its guild's."""
        keys = []
        if channel_id is not None:
            keys.append(self._style_key("channel", channel_id))
        if guild_id is not None:
            keys.append(self._style_key("guild", guild_id))
        for raw in (await self.r.mget(keys)) if keys else []:
            if raw is not None:
                return Style.model_validate_json(raw)
        return None

    async def set_chat_channel(self, channel_id: int | str, on: bool) -> None:
        if on:
            await self.r.sadd(self.k("chat", "channels"), channel_id)
        else:
            await self.r.srem(self.k("chat", "channels"), channel_id)

    async def chat_channel_on(self, channel_id: int | str) -> bool:
        return bool(await self.r.sismember(self.k("chat", "channels"), channel_id))

    # --- adapter registry -----------------------------------------------------------------------

    async def save_adapter(self, record: AdapterRecord, blob: bytes) -> AdapterRecord:
        """Store an adapter's bytes and metadata under a new version; does not activate it."""
        if not blob:
            raise StoreError("an adapter needs its safetensors bytes")
        number = await self.r.incr(self.k("ad", "seq"))
        record = record.model_copy(update={"version": f"v{number}",
                                           "sha256": hashlib.sha256(blob).hexdigest(),
                                           "size_bytes": len(blob)})
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.k("ad", record.version, "blob"), blob)
            pipe.set(self.k("ad", record.version, "meta"), record.model_dump_json())
            pipe.zadd(self.k("ad", "all"), {record.version: record.created_at})
            await pipe.execute()
        return record

    async def adapter_record(self, version: str) -> AdapterRecord:
        raw = await self.r.get(self.k("ad", version, "meta"))
        if raw is None:
            raise UnknownAdapter(version)
        return AdapterRecord.model_validate_json(raw)

    async def adapter_bytes(self, version: str) -> bytes:
        """The adapter's safetensors bytes, refused when they do not match their sha256."""
        record = await self.adapter_record(version)
        blob = await self.r.get(self.k("ad", version, "blob"))
        if blob is None:
            raise AdapterCorrupt(f"adapter {version} has metadata but no bytes")
        digest = hashlib.sha256(blob).hexdigest()
        if digest != record.sha256:
            raise AdapterCorrupt(f"adapter {version} bytes do not match their sha256 "
                                 f"({digest[:12]}… != {record.sha256[:12]}…)")
        return blob

    async def list_adapters(self) -> list[AdapterRecord]:
        versions = [v.decode() for v in await self.r.zrange(self.k("ad", "all"), 0, -1)]
        raws = await self.r.mget([self.k("ad", v, "meta") for v in versions]) if versions else []
        return [AdapterRecord.model_validate_json(raw) for raw in raws if raw is not None]

    async def active_version(self) -> str:
        raw = await self.r.get(self.k("ad", "active"))
        return raw.decode() if raw is not None else BASE_VERSION

    async def active_history(self) -> list[str]:
        return [v.decode() for v in await self.r.lrange(self.k("ad", "history"), 0, -1)]

    async def activate(self, version: str, *, expected: str | None = None) -> str:
        """Make `version` active (atomically, announcing it); returns the previous version.

        With `expected`, the pointer moves only if it still points there (else StoreError).
        """
        if version != BASE_VERSION:
            await self.adapter_record(version)  # unknown versions are refused
        event = AdapterEvent(kind="activated", version=version, previous="__PREVIOUS__")
        keys = [self.k("ad", "active"), self.k("ad", "history"), self.k("ev", "adapter")]
        try:
            previous = await self._activate(keys=keys,
                                            args=[version, expected or "",
                                                  event.model_dump_json()])
        except aioredis.ResponseError as error:
            if "ACTIVE_CHANGED" in str(error):
                raise StoreError(f"the active adapter changed meanwhile ({error}); "
                                 "nothing was swapped") from None
            raise
        return previous.decode()

    async def rollback(self) -> str:
        """Return to the previously active version; returns the version now active."""
        event = AdapterEvent(kind="rollback", version="__VERSION__", previous="__PREVIOUS__")
        keys = [self.k("ad", "active"), self.k("ad", "history"), self.k("ev", "adapter")]
        try:
            version = await self._rollback(keys=keys, args=[event.model_dump_json()])
        except aioredis.ResponseError as error:
            if "NO_HISTORY" in str(error):
                raise StoreError("there is no earlier adapter to roll back to") from None
            raise
        return version.decode()

    async def save_report(self, version: str, report: dict, png: bytes | None = None) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.k("ad", version, "report"), json.dumps(report))
            if png is not None:
                pipe.set(self.k("ad", version, "plot"), png)
            await pipe.execute()

    async def report(self, version: str) -> tuple[dict | None, bytes | None]:
        raw, png = await self.r.mget([self.k("ad", version, "report"),
                                      self.k("ad", version, "plot")])
        return (json.loads(raw) if raw is not None else None), png

    async def adapter_events(self, subscribed: asyncio.Event | None = None
                             ) -> AsyncIterator[AdapterEvent]:
        """Adapter changes as they are published (subscribe before reading the active one).

        `subscribed` is set once the subscription is in place, so a caller can read the active
        version after that without missing a change made in between.
        """
        pubsub = self.r.pubsub()
        await pubsub.subscribe(self.k("ev", "adapter"))
        if subscribed is not None:
            subscribed.set()
        try:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    yield AdapterEvent.model_validate_json(message["data"])
        finally:
            await pubsub.aclose()

    # --- rating events and trainer state --------------------------------------------------------

    async def last_rating_event(self) -> str:
        """The id of the newest rating event ("0-0" when there is none)."""
        newest = await self.r.xrevrange(self.k("ev", "ratings"), count=1)
        return newest[0][0].decode() if newest else "0-0"

    async def count_rating_events(self, after: str, upto: str | None = None) -> int:
        """How many rating events came after the event id `after` (up to `upto`)."""
        events = await self.r.xrange(self.k("ev", "ratings"), min=f"({after}",
                                     max=upto or "+")
        return len(events)

    async def add_import_event(self, exchange_id: str) -> None:
        await self.r.xadd(self.k("ev", "ratings"),
                          {"exchange": exchange_id, "kind": "import", "moderator": ""},
                          maxlen=RATING_STREAM_MAXLEN, approximate=True)

    async def get_cursor(self) -> str:
        raw = await self.r.get(self.k("tr", "cursor"))
        return raw.decode() if raw is not None else "0-0"

    async def set_cursor(self, event_id: str) -> None:
        await self.r.set(self.k("tr", "cursor"), event_id)

    async def acquire_lock(self, token: str, ttl_s: float) -> bool:
        return bool(await self.r.set(self.k("tr", "lock"), token, nx=True,
                                     px=int(ttl_s * 1000)))

    async def renew_lock(self, token: str, ttl_s: float) -> bool:
        return bool(await self._renew(keys=[self.k("tr", "lock")],
                                      args=[token, int(ttl_s * 1000)]))

    async def release_lock(self, token: str) -> bool:
        return bool(await self._release(keys=[self.k("tr", "lock")], args=[token]))

    async def request_training(self, requested_by: str) -> None:
        await self.r.set(self.k("tr", "request"),
                         json.dumps({"by": requested_by, "at": time.time()}))

    async def training_requested(self) -> bool:
        """Whether a "train now" request waits (without taking it)."""
        return bool(await self.r.exists(self.k("tr", "request")))

    async def take_training_request(self) -> dict | None:
        raw = await self.r.getdel(self.k("tr", "request"))
        return json.loads(raw) if raw is not None else None

    async def record_run(self, outcome: dict) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.lpush(self.k("tr", "runs"), json.dumps(outcome))
            pipe.ltrim(self.k("tr", "runs"), 0, RUNS_KEPT - 1)
            await pipe.execute()

    async def recent_runs(self, count: int = 10) -> list[dict]:
        return [json.loads(raw) for raw in await self.r.lrange(self.k("tr", "runs"), 0,
                                                               count - 1)]

    async def claim(self, *parts: object, ttl_s: float) -> bool:
        """True for the first caller to claim key P:parts within `ttl_s` (SET NX with expiry).

        One claim is shared by every bot process: per-user cooldowns, one mod-log post per change.
        """
        return bool(await self.r.set(self.k(*parts), b"1", nx=True,
                                     px=max(1, int(ttl_s * 1000))))

    # --- privacy and statistics -----------------------------------------------------------------

    async def forget_user(self, user_id: int | str) -> int:
        """Delete every exchange of this user (with its ratings); returns how many."""
        user_key = self.k("ex", "user", self.user_hash(user_id))
        ids = [i.decode() for i in await self.r.smembers(user_key)]
        exchanges = await self.get_exchanges(ids)
        async with self.r.pipeline(transaction=True) as pipe:
            for exchange in exchanges:
                if exchange.message_id is not None:
                    pipe.delete(self.k("ex", "msg", exchange.message_id))
            for exchange_id in ids:
                pipe.delete(self.k("ex", exchange_id), self.k("rt", exchange_id),
                            self.k("co", exchange_id))
                pipe.zrem(self.k("ex", "all"), exchange_id)
                pipe.zrem(self.k("rated"), exchange_id)
            pipe.delete(user_key)
            await pipe.execute()
        return len(exchanges)

    async def stats(self) -> dict:
        """Exchanges, ratings and the positive share, overall and per adapter version."""
        ids = [i.decode() for i in await self.r.zrange(self.k("ex", "all"), 0, -1)]
        per_version: dict[str, dict] = {}
        rated = {r.exchange.id: r for r in await self.rated_exchanges()}
        for exchange in await self.get_exchanges(ids):
            row = per_version.setdefault(exchange.adapter_version,
                                         {"exchanges": 0, "rated": 0, "positive": 0})
            row["exchanges"] += 1
            if exchange.id in rated and rated[exchange.id].ratings:
                row["rated"] += 1
                row["positive"] += rated[exchange.id].score > 0
        for row in per_version.values():
            row["positive_share"] = row["positive"] / row["rated"] if row["rated"] else None
        total = {key: sum(row[key] for row in per_version.values())
                 for key in ("exchanges", "rated", "positive")}
        total["positive_share"] = total["positive"] / total["rated"] if total["rated"] else None
        total["corrections"] = sum(len(r.corrections) for r in rated.values())
        return {"total": total, "per_version": per_version}
