"""Every Redis key the project uses, in one place: the layout below is what `Keys` builds.

Redis holds JSON strings and raw bytes only, never pickles. Schema version 1; every key starts
with the `KEY_PREFIX` setting (`P` below):

    P:schema                     "1"
    P:ex:{id}                    JSON Exchange; expires after UNRATED_TTL_DAYS until first rated
    P:ex:msg:{message_id}        id of the exchange whose reply is that Discord message (same TTL)
    P:ex:user:{user_hash}        zset  exchange id -> when it expires (+inf once kept); pruned
                                 as the user writes, and the key expires with the user's last
                                 unrated exchange (for forget_user)
    P:rt:{id}                    hash  moderator_hash -> "1" | "-1" (one rating per moderator)
    P:co:{id}                    hash  moderator_hash -> JSON Correction (one per moderator)
    P:rated                      zset  exchange id -> time of its latest rating or correction
    P:stats                      hash  counters kept with every write, so /stats reads no
                                 exchange: "exchanges", "corrections", and per adapter version
                                 "{version}:exchanges|rated|positive" (an expired unrated
                                 exchange still counts as served; a forgotten one does not)
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
    P:ev:ratings                 stream of rating events (up, down, withdraw, correct)
    P:ev:adapter                 pub/sub channel of adapter changes (JSON AdapterEvent)
    P:tr:cursor                  id of the last rating event a finished training cycle used
    P:tr:lock                    token of the trainer holding the training lock (with a TTL)
    P:tr:request                 JSON "train now" request from the bot; kept until a cycle
                                 that saw it ends (a failed one counts an attempt)
    P:tr:runs                    list  JSON outcomes of recent training cycles, newest first
    P:cd:{purpose}:{user_hash}   per-user cooldown of the bot ("reply", "notice"); expires
    P:modlog:{kind}:{ver}:{prev} an adapter change already posted to the mod log; expires

User ids are stored only as an HMAC-SHA256 under USER_HASH_SECRET. The score of an exchange
is the sum of its ratings hash, never stored twice.
"""

from __future__ import annotations

SCHEMA_VERSION = 1


class Keys:
    """The key names under one prefix."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def __call__(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    # --- exchanges, ratings, corrections, counters ----------------------------------------
    def exchange(self, exchange_id: str) -> str:
        return self("ex", exchange_id)

    def message(self, message_id: int | None) -> str:
        """The message index key, or "" (no key) for an exchange without a Discord message."""
        return self("ex", "msg", message_id) if message_id is not None else ""

    def user_exchanges(self, user_hash: str | None) -> str:
        return self("ex", "user", user_hash) if user_hash else ""

    def ratings(self, exchange_id: str) -> str:
        return self("rt", exchange_id)

    def corrections(self, exchange_id: str) -> str:
        return self("co", exchange_id)

    @property
    def rated(self) -> str:
        return self("rated")

    @property
    def stats(self) -> str:
        return self("stats")

    # --- styles and chat channels -----------------------------------------------------------
    def style(self, scope: str, scope_id: int | str) -> str:
        return self("style", scope, scope_id)

    @property
    def chat_channels(self) -> str:
        return self("chat", "channels")

    # --- adapter registry ---------------------------------------------------------------------
    @property
    def adapter_seq(self) -> str:
        return self("ad", "seq")

    def adapter(self, version: str, part: str) -> str:
        """`part` is meta, blob, report or plot."""
        return self("ad", version, part)

    @property
    def adapters(self) -> str:
        return self("ad", "all")

    @property
    def active(self) -> str:
        return self("ad", "active")

    @property
    def history(self) -> str:
        return self("ad", "history")

    # --- events and trainer state ----------------------------------------------------------
    @property
    def rating_events(self) -> str:
        return self("ev", "ratings")

    @property
    def adapter_events(self) -> str:
        return self("ev", "adapter")

    def trainer(self, part: str) -> str:
        """`part` is cursor, lock, request or runs."""
        return self("tr", part)
