"""Every Redis key the project uses, in one place: the layout below is what `Keys` builds.

Redis holds JSON strings and raw bytes only, never pickles. Schema version 2 (migrate.py moves
schema 1 data here once). Every key starts with the `KEY_PREFIX` setting (`P` below). A tenant
is a Discord server (its guild id; DMs belong to HOME_GUILD_ID, the console uses its server
or 0); `T` is `P:g:{tenant}`, the keys of one tenant.

Shared by every tenant (ids are unique across servers):

    P:schema                     "2"
    P:indexed:channels           "1" once exchanges stored before the channel index are in it
                                 (migrate.py)
    P:tenants                    set   tenants that have exchanges or adapters
    P:ex:{id}                    JSON Exchange (with its tenant); expires after UNRATED_TTL_DAYS
                                 until first rated
    P:ex:msg:{message_id}        id of the exchange whose reply is that Discord message (same
                                 TTL); one key per piece of a reply split over messages
    P:ex:user:{user_hash}        zset  exchange id -> when it expires (+inf once kept); pruned
                                 as the user writes, and the key expires with the user's last
                                 unrated exchange (for forget_user)
    P:ex:text:{message_id}       zset  (same scores and lifetime) exchanges holding the text of
                                 that user message, as their question or as context (for a
                                 deleted message)
    P:ex:ctx:{user_hash}         zset  (same scores and lifetime) exchanges of others holding
                                 this user's text as context (for forget_user)
    P:rt:{id}                    hash  moderator_hash -> "1" | "-1" (one rating per moderator)
    P:co:{id}                    hash  moderator_hash -> JSON Correction (one per moderator)
    P:mod:{moderator_hash}       set   exchanges this moderator rated or corrected (for
                                 forget_user; kept as long as the ratings)
    P:style:guild:{guild_id}     JSON Style
    P:style:channel:{channel_id} JSON Style (overrides the guild's)
    P:chat:channels              set   channel ids where the bot answers every message
    P:ad:seq                     counter for adapter versions v1, v2, ... (unique across tenants)
    P:ad:{version}:meta          JSON AdapterRecord (with its tenant and the sha256 of the blob)
    P:ad:{version}:blob          safetensors bytes of the adapter
    P:ad:{version}:report        JSON training report
    P:ad:{version}:plot          PNG bytes of the loss curve
    P:ad:default                 the tenant whose adapter serves tenants without their own
                                 (absent: HOME_GUILD_ID)
    P:ev:adapter                 pub/sub channel of adapter changes (JSON AdapterEvent)
    P:cd:{purpose}:{user_hash}   per-user cooldown of the bot ("reply", "notice"); expires
    P:modlog:{kind}:{ver}:{prev} an adapter change already posted to the mod log; expires
    P:fence                      "1", written before a WAIT when writes must reach replicas
                                 (REDIS_WAIT_REPLICAS, bot/core/store/client.py)
    P:hb:discord:{process}       JSON heartbeat of one bot process: its gateway latency and
                                 ready shards (deploy/healthcheck.py); expires. {process} is
                                 its host, and with SHARD_IDS "{host}:{shard ids}" (e.g.
                                 "gw-1:0,1"): see gateway_process()
    P:identify:{bucket}          "1" for 5 s after a shard of this bot sent IDENTIFY in that
                                 rate-limit bucket (shard id % max_concurrency), whichever
                                 process it runs in (bot/frontends/discord/identify.py)

One tenant's (`T` = P:g:{tenant}):

    T:rated                      zset  exchange id -> time of its latest rating or correction
    T:stats                      hash  counters kept with every write, so /stats reads no
                                 exchange: "exchanges", "corrections", and per adapter version
                                 "{version}:exchanges|rated|positive" (an expired unrated
                                 exchange still counts as served; a forgotten one does not)
    T:ev:ratings                 stream of rating events (up, down, withdraw, correct)
    T:ad:all                     zset  versions trained for this tenant -> created_at
    T:ad:active                  the version serving this tenant (absent: "base")
    T:ad:history                 list  versions that were active before, newest first
    T:ad:refused                 JSON Refusal: the active version a bot refused (the check it
                                 failed) and the version serving instead; removed once the
                                 active version serves
    T:tr:cursor                  id of the last rating event a finished training cycle used
    T:tr:lock                    token of the trainer holding this tenant's lock (with a TTL)
    T:tr:request                 JSON "train now" request from the bot; kept until a cycle
                                 that saw it ends (a failed one counts an attempt)
    T:tr:runs                    list  JSON outcomes of recent training cycles, newest first
    T:canary                     JSON Canary: a promoted adapter answering a share of new
                                 conversations until live ratings decide (canary.py)
    T:modlog                     channel id where this tenant's adapter changes are posted
    T:trust:distrusted           set   moderator hashes an admin distrusted: their ratings and
                                 teachings leave training (bot/core/store/trust.py)
    T:review:items               hash  held item id -> JSON HeldItem (status pending, approved
                                 or rejected): what the trainer held for an admin's review
    T:review:pending             zset  held item id -> when it was held (the review queue)
    T:exam:pins                  zset  exchange id -> when an admin pinned it to the exam set
    T:ex:channel:{channel_id}    zset  exchange id -> when it expires (+inf once kept), like
                                 P:ex:user: the exchanges said in that channel or thread, and
                                 a channel's also those of its threads (a deleted channel or
                                 thread takes them with it)
    T:ex:recent                  zset  exchange id -> when it was stored: the last RECENT_S,
                                 at most RECENT_KEPT (the newest); what the Discord front end
                                 checks for messages deleted while it was not connected

User ids are stored only as an HMAC-SHA256 under USER_HASH_SECRET. The score of an exchange
is the sum of its ratings hash, never stored twice.
"""

from __future__ import annotations

SCHEMA_VERSION = 2
COOLDOWN_PURPOSES = ("reply", "notice")  # the per-user cooldowns of the bot (P:cd:...)
RECENT_S = 7 * 86400  # how far back T:ex:recent reaches
RECENT_KEPT = 1000  # most exchanges T:ex:recent holds per tenant


def gateway_process(host: str, shard_ids: list[int] | None) -> str:
    """How one bot process is named in its heartbeat key: its host, plus its shards when it
    runs a subset of them (so several gateway processes may share a host)."""
    return host if shard_ids is None else f"{host}:{','.join(map(str, shard_ids))}"


class Keys:
    """The key names under one prefix; a tenant's own keys need `tenant` (see `of`)."""

    def __init__(self, prefix: str, tenant: int | None = None):
        self.prefix = prefix
        self.tenant = tenant

    def __call__(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    def of(self, tenant: int) -> Keys:
        """The same prefix, scoped to `tenant`."""
        return Keys(self.prefix, tenant)

    def _own(self, *parts: object) -> str:
        if self.tenant is None:
            raise ValueError(f"the key {':'.join(map(str, parts))} belongs to a tenant")
        return self("g", self.tenant, *parts)

    @property
    def tenants(self) -> str:
        return self("tenants")

    @property
    def write_fence(self) -> str:
        return self("fence")

    # --- exchanges, ratings, corrections ----------------------------------------------------
    def exchange(self, exchange_id: str) -> str:
        return self("ex", exchange_id)

    def message(self, message_id: int | None) -> str:
        """The message index key, or "" (no key) for an exchange without a Discord message."""
        return self("ex", "msg", message_id) if message_id is not None else ""

    def user_exchanges(self, user_hash: str | None) -> str:
        return self("ex", "user", user_hash) if user_hash else ""

    def text_exchanges(self, message_id: int) -> str:
        """Exchanges holding the text of this user message (question or context)."""
        return self("ex", "text", message_id)

    def context_exchanges(self, user_hash: str) -> str:
        """Exchanges of others holding this user's text as context."""
        return self("ex", "ctx", user_hash)

    def moderator_exchanges(self, moderator_hash: str) -> str:
        """Exchanges this moderator rated or corrected."""
        return self("mod", moderator_hash)

    def ratings(self, exchange_id: str) -> str:
        return self("rt", exchange_id)

    def corrections(self, exchange_id: str) -> str:
        return self("co", exchange_id)

    def channel_exchanges(self, channel_id: int) -> str:
        """This tenant's exchanges said in that channel or thread (or in its threads)."""
        return self._own("ex", "channel", channel_id)

    @property
    def recent_exchanges(self) -> str:
        return self._own("ex", "recent")

    @property
    def rated(self) -> str:
        return self._own("rated")

    @property
    def stats(self) -> str:
        return self._own("stats")

    @property
    def rating_events(self) -> str:
        return self._own("ev", "ratings")

    # --- styles and chat channels -----------------------------------------------------------
    def cooldown(self, purpose: str, user_hash: str) -> str:
        return self("cd", purpose, user_hash)

    def heartbeat(self, process: str) -> str:
        return self("hb", "discord", process)

    def identify_slot(self, bucket: int) -> str:
        return self("identify", bucket)

    def style(self, scope: str, scope_id: int | str) -> str:
        return self("style", scope, scope_id)

    @property
    def chat_channels(self) -> str:
        return self("chat", "channels")

    # --- adapters -------------------------------------------------------------------------------
    @property
    def adapter_seq(self) -> str:
        return self("ad", "seq")

    def adapter(self, version: str, part: str) -> str:
        """`part` is meta, blob, report or plot."""
        return self("ad", version, part)

    @property
    def default_tenant(self) -> str:
        return self("ad", "default")

    @property
    def adapter_events(self) -> str:
        return self("ev", "adapter")

    @property
    def adapters(self) -> str:
        return self._own("ad", "all")

    @property
    def active(self) -> str:
        return self._own("ad", "active")

    @property
    def history(self) -> str:
        return self._own("ad", "history")

    @property
    def refused(self) -> str:
        return self._own("ad", "refused")

    @property
    def canary(self) -> str:
        return self._own("canary")

    @property
    def modlog(self) -> str:
        return self._own("modlog")

    # --- moderator trust ----------------------------------------------------------------------
    @property
    def distrusted(self) -> str:
        return self._own("trust", "distrusted")

    def review(self, part: str) -> str:
        """`part` is items or pending."""
        return self._own("review", part)

    @property
    def exam_pins(self) -> str:
        return self._own("exam", "pins")

    # --- trainer state ------------------------------------------------------------------------
    def trainer(self, part: str) -> str:
        """`part` is cursor, lock, request or runs."""
        return self._own("tr", part)
