"""The fake Discord under dpytest: what it refuses and records, as Discord would.

It refuses what Discord refuses (and, scripted per test in `bot.trouble`, answers a write with
403, 5xx or 429 with a retry-after): a message (sent, edited, or an interaction answer) over 2,000
characters; a reply to a deleted message unless its reference says `fail_if_not_exists=False`;
an edit of a deleted message; an interaction's first answer after 3 s, and any answer after 15
minutes (measured on `RecordingAdapter.clock`, which a test may replace). An edit of the bot's
message comes back as MESSAGE_UPDATE, as Discord sends it (dpytest only changes its own copy),
so the client's cached message shows the edited text. `RecordingAdapter` stands in for
Discord's interaction-response endpoints (the only HTTP an interaction answer uses) and records
what would have been sent. `slow_store` makes the store's Redis answer late, as a pool that is
exhausted under load does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import weakref

import discord
from discord.ext.test import backend, factories
from discord.webhook.async_ import AsyncWebhookAdapter

MESSAGE_LIMIT = 2000
ANSWER_WINDOW_S = 3.0  # an interaction must be answered (or deferred) this soon
TOKEN_LIFETIME_S = 900.0  # after that, its token takes no edit and no follow-up


class _Response:
    """What discord.HTTPException reads from a failed HTTP response."""

    def __init__(self, status: int, reason: str):
        self.status, self.reason = status, reason


_ERRORS = {403: (discord.Forbidden, "Forbidden"), 404: (discord.NotFound, "Not Found")}


def refusal(bot, what: str, status: int, code: int, text: str) -> discord.HTTPException:
    """The error discord.py raises for Discord's refusal (recorded in `bot.refusals`): a 5xx
    is what discord.py raises once its own retries of it are spent."""
    if bot is not None:
        bot.refusals.append((what, status, text))
    if status >= 500:
        return discord.DiscordServerError(_Response(status, "Server Error"), text)
    kind, reason = _ERRORS.get(status, (discord.HTTPException, "Bad Request"))
    return kind(_Response(status, reason), {"code": code, "message": text})


async def _trouble(bot, what: str, channel_id: int) -> None:
    """What Discord answers instead, when a test scripted it in `bot.trouble`: a list of
    (what, status, retry_after) taken in order for the next "send" or "edit". 403 and 5xx are
    raised as discord.py raises them. A 429 is what discord.py handles itself: it marks the
    route's rate-limit bucket empty for retry_after (where the bot can read it), waits, and
    sends again; recorded in `bot.rate_limited`."""
    found = next((t for t in bot.trouble if t[0] == what), None)
    if found is None:
        return
    bot.trouble.remove(found)
    _, status, retry_after = found
    if status == 403:
        raise refusal(bot, what, 403, 50013, "Missing Permissions")
    if status >= 500:
        raise refusal(bot, what, status, 0, "Service Unavailable")
    loop = asyncio.get_running_loop()
    route = discord.http.Route("POST", "/channels/{channel_id}/messages",
                               channel_id=channel_id)
    bucket = discord.http.Ratelimit(None)
    bucket.limit, bucket.remaining = 5, 0
    bucket.expires = loop.time() + retry_after
    bot.http._bucket_hashes[route.key] = "fake-bucket"
    bot.http._buckets[f"fake-bucket:{route.major_parameters}"] = bucket
    bot.rate_limited.append((what, loop.time(), retry_after))
    await asyncio.sleep(retry_after)


def _too_long(bot, what: str, content) -> None:
    if content is not None and len(content) > MESSAGE_LIMIT:
        raise refusal(bot, what, 400, 50035, "Invalid Form Body: content: Must be 2000 or "
                                             "fewer in length.")


def _payload_of(params) -> dict:
    payload = params.payload
    if payload is None and params.multipart:  # a send with files: JSON in the first part
        payload = json.loads(params.multipart[0]["value"])
    return payload or {}


def record_sends(bot) -> None:
    """Keep each send's HTTP payload in `bot.sent_payloads`, and keep the reply reference
    that dpytest 0.7 drops (Discord stores it: the bot's reply points at the question).
    Refuse, as Discord does, content over 2,000 characters, a reply to a message that no
    longer exists unless the reference says fail_if_not_exists=False, and an edit of a deleted
    message. Every send and edit of the bot goes into `bot.writes` as (kind, message id,
    content), in order, with its reactions and deletions (recorded by make_bot);
    `bot.edits` holds the edits alone. `bot.write_times` holds when each send and edit was
    asked for, on `bot.write_clock` (a test may set its own)."""
    send, edit = bot.http.send_message, bot.http.edit_message
    bot.sent_payloads = []
    bot.writes = []
    bot.edits = []
    bot.write_times = []
    bot.write_clock = time.monotonic
    bot.trouble = []  # scripted answers instead of success (see _trouble)
    bot.rate_limited = []

    async def send_message(channel_id, *, params):
        channel = sys._getframe(1).f_locals["channel"]  # noqa: F841 - dpytest reads this local
        bot.write_times.append(bot.write_clock())
        await _trouble(bot, "send", channel_id)
        payload = _payload_of(params)
        _too_long(bot, "send", payload.get("content"))
        reference = payload.get("message_reference")
        if reference and reference.get("fail_if_not_exists", True):
            known = backend._cur_config.messages.get(int(reference["channel_id"]), [])
            if not any(int(m["id"]) == int(reference["message_id"]) for m in known):
                raise refusal(bot, "send", 400, 50035, "Invalid Form Body: message_reference: "
                                                       "Unknown message")
        bot.sent_payloads.append(payload)
        data = await send(channel_id, params=params)
        reference = payload.get("message_reference")
        if reference:
            data["message_reference"] = reference
            raw = next(m for m in backend._cur_config.messages[channel_id]
                       if m["id"] == data["id"])
            raw["message_reference"] = reference
            cached = bot._connection._get_message(data["id"])
            cached.reference = discord.MessageReference.with_state(bot._connection, reference)
        bot.writes.append(("send", int(data["id"]), data.get("content")))
        return data

    async def edit_message(channel_id, message_id, **fields):
        self = sys._getframe(1).f_locals["self"]  # dpytest reads this local: the message
        bot.write_times.append(bot.write_clock())
        await _trouble(bot, "edit", channel_id)
        content = _payload_of(fields["params"]).get("content")
        _too_long(bot, "edit", content)
        kept = backend._cur_config.messages.get(int(channel_id), [])
        before = next((m for m in kept if int(m["id"]) == int(message_id)), None)
        if before is None:
            raise refusal(bot, "edit", 404, 10008, "Unknown Message")
        edited = await edit(channel_id, message_id, **fields)
        # dpytest rebuilds the message from discord.py's object: its type as an enum (at times
        # of an enum) and without its channel or reply reference. Discord keeps the message as
        # it was, with the new content, and sends the type as a number.
        kind = edited.get("type", 0)
        while not isinstance(kind, int):
            kind = kind.value
        data = {**before, **edited, "type": kind}
        kept[kept.index(next(m for m in kept if int(m["id"]) == int(message_id)))] = data
        bot.writes.append(("edit", int(message_id), content))
        bot.edits.append((int(message_id), content))
        # Discord tells every client of the edit (with where the message is).
        guild = getattr(self.channel, "guild", None)
        bot._connection.parse_message_update({
            **data, "channel_id": str(channel_id),
            **({"guild_id": str(guild.id)} if guild is not None else {})})
        return data

    bot.http.send_message = send_message
    bot.http.edit_message = edit_message


def read_history(bot) -> None:
    """Reading a channel's history after a message, as Discord answers it: any snowflake as
    `after` (dpytest 0.7 wants a stored id and returns it too), the `limit` oldest messages
    after it, newest first; 404 Unknown Channel for a channel Discord does not know. Each such
    read is recorded in `bot.history_reads` as (channel id, limit). (Reads without `after`
    stay dpytest's.)"""
    logs_from = bot.http.logs_from
    bot.history_reads = []

    async def read(channel_id, limit, before=None, after=None, around=None):
        if after is None:
            return await logs_from(channel_id, limit, before=before, after=after,
                                   around=around)
        bot.history_reads.append((int(channel_id), limit))
        if bot.get_channel(int(channel_id)) is None:
            raise refusal(None, "history", 404, 10003, "Unknown Channel")
        kept = backend._cur_config.messages.get(int(channel_id), [])
        later = sorted((m for m in kept if int(m["id"]) > int(after)), key=lambda m: int(m["id"]))
        return list(reversed(later[:limit]))

    bot.http.logs_from = read


def add_reaction_type(state) -> None:
    """dpytest 0.7 leaves out the `type` field (0 = normal reaction) that Discord sends with
    every reaction event and discord.py 2.7 requires; add it on the way in."""
    for name in ("parse_message_reaction_add", "parse_message_reaction_remove"):
        parse = getattr(state, name)

        def with_type(data, parse=parse):
            return parse({"type": 0, **data})

        setattr(state, name, with_type)


class FakeClock:
    """A clock a test moves by hand, for RecordingAdapter's answer windows and the channels'
    write budgets (channel_writes.py)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep on this clock: the time passes at once (other tasks run first)."""
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


class RecordingAdapter(AsyncWebhookAdapter):
    """Discord's interaction endpoints, recorded instead of called; what Discord would refuse
    raises (and is recorded in `refused`) instead."""

    def __init__(self, clock=time.monotonic):
        super().__init__()
        self.calls: list[tuple[str, str, dict]] = []
        self.refused: list[tuple[str, str, str]] = []
        self.clock = clock
        self.created: dict[str, float] = {}  # interaction id or token -> when it arrived

    def arrived(self, payload: dict) -> None:
        now = self.clock()
        self.created[payload["id"]] = self.created[payload["token"]] = now

    def _refuse(self, route, status: int, code: int, text: str):
        self.refused.append((route.method, route.path, text))
        return refusal(None, route.path, status, code, text)

    async def request(self, route, session, *, payload=None, multipart=None, files=None,
                      **kwargs):
        if payload is None and multipart:
            payload = json.loads(multipart[0]["value"])
        payload = payload or {}
        callback = route.path.endswith("/callback")
        key = str(route.webhook_id) if callback else route.webhook_token
        age = self.clock() - self.created.get(key, self.clock())
        if (callback and age > ANSWER_WINDOW_S) or age > TOKEN_LIFETIME_S:
            raise self._refuse(route, 404, 10062, "Unknown interaction")
        content = payload.get("data", payload).get("content") if callback else payload.get(
            "content")
        if content is not None and len(content) > MESSAGE_LIMIT:
            raise self._refuse(route, 400, 50035, "Invalid Form Body: content: Must be 2000 "
                                                  "or fewer in length.")
        self.calls.append((route.method, route.path, payload))
        if callback:
            return {"interaction": {"id": str(route.webhook_id), "type": 2}}
        return {"id": str(factories.make_id()), "channel_id": "0", "type": 0,
                "content": (payload or {}).get("content", ""), "author": factories.make_user_dict(
                    "FakeApp", "0001", None), "attachments": [], "embeds": [], "mentions": [],
                "mention_roles": [], "pinned": False, "mention_everyone": False, "tts": False,
                "timestamp": "2026-01-01T00:00:00+00:00", "edited_timestamp": None, "flags": 64}

    def answers(self) -> list[dict]:
        """The content of each message answer (callback, edit or follow-up), with its ephemeral
        flag (an edit of a deferred answer is as ephemeral as the deferral was)."""
        found, deferred_ephemeral = [], False
        for _method, path, payload in self.calls:
            callback = path.endswith("/callback")
            data = payload.get("data", payload) if callback else payload
            flags = data.get("flags") or 0
            if callback and payload.get("type") == 5:  # "thinking...": edited later
                deferred_ephemeral = bool(flags & 64)
            if "content" in data:
                edit = path.endswith("/messages/@original")
                found.append({"content": data["content"],
                              "ephemeral": deferred_ephemeral if edit else bool(flags & 64),
                              "type": payload.get("type")})
        return found

    def modals(self) -> list[dict]:
        return [payload["data"] for _, path, payload in self.calls
                if path.endswith("/callback") and payload.get("type") == 9]


@contextlib.contextmanager
def slow_store(store, seconds: float):
    """While open, the first Redis command of each task waits `seconds` (real time) for its
    connection, as when the pool is exhausted: whatever a command or form does with the store
    before it answers Discord takes that long. (Only the first, so a test of many commands
    stays short; it is the wait before the first answer that Discord's window sees.)"""
    pool = store._redis.connection_pool
    get_connection = pool.get_connection
    waited: weakref.WeakSet = weakref.WeakSet()  # tasks that waited already

    async def slow_get_connection(*args, **kwargs):
        task = asyncio.current_task()
        if task is not None and task not in waited:
            waited.add(task)
            await asyncio.sleep(seconds)
        return await get_connection(*args, **kwargs)

    pool.get_connection = slow_get_connection
    try:
        yield
    finally:
        pool.get_connection = get_connection
