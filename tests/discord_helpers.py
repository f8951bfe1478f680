"""Helpers for driving the real bot through dpytest, and app commands through the real tree.

dpytest (0.7) emulates Discord's HTTP API for messages and reactions but has no interactions
and no message references. What is added here stays at that same boundary:
- `reply_message` builds a gateway MESSAGE_CREATE payload with a `message_reference`, as
  Discord sends it, and feeds it to the client's real parser.
- `invoke` builds an INTERACTION_CREATE payload (as discord.py's own tests do) and feeds it to
  the real `parse_interaction_create`, so the command tree, its checks and its error handler
  run; `RecordingAdapter` stands in for Discord's interaction-response endpoint (the only HTTP
  an interaction answer uses) and records what would have been sent.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback

import discord
import discord.ext.test as dpytest
from discord.ext.test import backend, callbacks, factories
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

from bot.app import build_bot


async def make_bot(settings, store, engine, *, guilds: int = 1, serving=None):
    """The real bot in dpytest: `guilds` servers, each with a text channel and the members
    alice, bob, mod and admin (distinct users per server)."""
    bot = build_bot(settings, store, engine, serving=serving, sync_commands=False)
    # An exception in an event handler is only logged by discord.py: keep it for the tests.
    bot.event_errors = []

    async def on_error(event, *args, **kwargs):
        bot.event_errors.append((event, sys.exc_info()[1]))
        traceback.print_exc()

    bot.on_error = on_error
    await bot._async_setup_hook()
    await bot.setup_hook()
    # The bot runs without the privileged members intent, so it caches no members. dpytest
    # creates its users as cached guild members, which needs that intent on its state; the bot
    # itself only uses members that arrive inside messages, reactions and interactions.
    bot._connection._intents.members = True
    bot._connection.member_cache_flags = discord.MemberCacheFlags.all()
    allowed_mentions = bot.allowed_mentions
    dpytest.configure(bot, guilds=guilds, members=["alice", "bob", "mod", "admin"])
    # dpytest's new connection state drops the client's options; carry over the one we set.
    bot._connection.allowed_mentions = allowed_mentions
    # dpytest swaps in its own connection state (without the loop a login would set); point
    # the command tree at it.
    bot._connection.loop = asyncio.get_running_loop()
    bot.tree._state = bot._connection
    bot._connection._command_tree = bot.tree
    _add_reaction_type(bot._connection)
    # dpytest's own reaction bookkeeping miscounts a second emoji; record the bot's calls.
    bot.own_reactions = []

    async def record_reaction(message, emoji):
        bot.own_reactions.append((message.id, str(emoji)))

    callbacks.set_callback(record_reaction, "add_reaction")
    bot.typing_channels = []

    async def record_typing(channel):
        bot.typing_channels.append(channel.id)

    callbacks.set_callback(record_typing, "send_typing")
    _record_sends(bot)
    # dpytest does not emulate leaving a server; record it where discord.py calls Discord.
    bot.left_guilds = []

    async def leave_guild(guild_id):
        bot.left_guilds.append(int(guild_id))

    bot.http.leave_guild = leave_guild
    return bot


def _record_sends(bot) -> None:
    """Keep each send's HTTP payload in `bot.sent_payloads`, and keep the reply reference
    that dpytest 0.7 drops (Discord stores it: the bot's reply points at the question)."""
    send = bot.http.send_message
    bot.sent_payloads = []

    async def send_message(channel_id, *, params):
        channel = sys._getframe(1).f_locals["channel"]  # noqa: F841 - dpytest reads this local
        payload = params.payload
        if payload is None and params.multipart:  # a send with files: JSON in the first part
            payload = json.loads(params.multipart[0]["value"])
        payload = payload or {}
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
        return data

    bot.http.send_message = send_message


def _add_reaction_type(state) -> None:
    """dpytest 0.7 leaves out the `type` field (0 = normal reaction) that Discord sends with
    every reaction event and discord.py 2.7 requires; add it on the way in."""
    for name in ("parse_message_reaction_add", "parse_message_reaction_remove"):
        parse = getattr(state, name)

        def with_type(data, parse=parse):
            return parse({"type": 0, **data})

        setattr(state, name, with_type)


def member(name: str, guild: discord.Guild | None = None) -> discord.Member:
    """The member `name` (of `guild`, default the first server)."""
    guild = guild or dpytest.get_config().guilds[0]
    return next(m for m in dpytest.get_config().members
                if m.name == name and m.guild.id == guild.id)


def reply_message(content: str, author: discord.Member, channel,
                  replied_to: discord.Message) -> discord.Message:
    """A user's message that replies to `replied_to`, delivered through the gateway parser."""
    data = factories.make_message_dict(channel, author, content=content,
                                       mentions=backend.find_user_mentions(content,
                                                                           channel.guild))
    data["message_reference"] = {"message_id": replied_to.id, "channel_id": channel.id,
                                 "guild_id": channel.guild.id}
    data["type"] = 19  # a reply
    state = backend.get_state()
    state.parse_message_create(data)
    backend._cur_config.messages.setdefault(channel.id, []).append(data)
    return state._get_message(data["id"])


async def sent_messages() -> list[discord.Message]:
    """Every message the bot sent since the last call, oldest first."""
    await dpytest.run_all_events()
    found = []
    while not dpytest.sent_queue.empty():
        found.append(dpytest.get_message())
    return found


class RecordingAdapter(AsyncWebhookAdapter):
    """Discord's interaction endpoints, recorded instead of called."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, str, dict]] = []

    async def request(self, route, session, *, payload=None, multipart=None, files=None,
                      **kwargs):
        if payload is None and multipart:
            payload = json.loads(multipart[0]["value"])
        self.calls.append((route.method, route.path, payload or {}))
        if route.path.endswith("/callback"):
            return {"interaction": {"id": str(route.webhook_id), "type": 2}}
        return {"id": str(factories.make_id()), "channel_id": "0", "type": 0,
                "content": (payload or {}).get("content", ""), "author": factories.make_user_dict(
                    "FakeApp", "0001", None), "attachments": [], "embeds": [], "mentions": [],
                "mention_roles": [], "pinned": False, "mention_everyone": False, "tts": False,
                "timestamp": "2026-01-01T00:00:00+00:00", "edited_timestamp": None, "flags": 64}

    def answers(self) -> list[dict]:
        """The content of each message answer (callback or edit), with its ephemeral flag."""
        found = []
        for _method, path, payload in self.calls:
            data = payload.get("data", payload) if path.endswith("/callback") else payload
            if "content" in data:
                found.append({"content": data["content"],
                              "ephemeral": bool((data.get("flags") or 0) & 64),
                              "type": payload.get("type")})
        return found

    def modals(self) -> list[dict]:
        return [payload["data"] for _, path, payload in self.calls
                if path.endswith("/callback") and payload.get("type") == 9]


def _member_payload(who: discord.Member, channel) -> dict:
    return {"user": factories.dict_from_user(who._user),
            "roles": [str(r.id) for r in who.roles if r != who.guild.default_role],
            "joined_at": None, "deaf": False, "mute": False, "flags": 0,
            # Discord sends the member's resolved permissions in the channel.
            "permissions": str(channel.permissions_for(who).value)}


def interaction_payload(bot, who: discord.Member, channel, data: dict,
                        kind: int = 2) -> dict:
    return {"id": str(factories.make_id()), "application_id": str(bot.user.id), "type": kind,
            "token": "interaction-token", "version": 1, "locale": "en-US",
            "attachment_size_limit": 8 * 1024 * 1024, "guild_id": str(channel.guild.id),
            "channel_id": str(channel.id),
            "channel": {"id": str(channel.id), "type": 0, "guild_id": str(channel.guild.id),
                        "name": channel.name, "position": 0, "permission_overwrites": []},
            "member": _member_payload(who, channel), "app_permissions": "0", "data": data}


def slash_data(*names: str, **options) -> dict:
    """Command data for `/names... option=value` (a command with optional subcommands)."""
    leaf = [{"type": 3, "name": key, "value": value} for key, value in options.items()]
    for name in reversed(names[1:]):
        leaf = [{"type": 1, "name": name, "options": leaf}]
    return {"id": "1", "name": names[0], "type": 1, "options": leaf}


def message_menu_data(name: str, target: discord.Message) -> dict:
    raw = next(m for m in backend._cur_config.messages[target.channel.id]
               if m["id"] == target.id)
    resolved = {**raw, "id": str(raw["id"]), "channel_id": str(raw["channel_id"])}
    return {"id": "2", "name": name, "type": 3, "target_id": str(target.id),
            "resolved": {"messages": {str(target.id): resolved}}}


async def slash_as(bot, who: discord.Member, channel, *names: str, **options) -> dict:
    """Run `/names... options` as `who` in `channel`; returns the last answer it gave (with
    every recorded call under "calls")."""
    recorder = RecordingAdapter()
    await invoke(bot, interaction_payload(bot, who, channel, slash_data(*names, **options)),
                 recorder)
    answers = recorder.answers()
    assert answers, recorder.calls
    return answers[-1] | {"calls": recorder.calls}


async def invoke(bot, payload: dict, recorder: RecordingAdapter, timeout: float = 10.0) -> None:
    """Deliver an interaction through the gateway parser and wait until it is answered."""
    async_context.set(recorder)
    before = len(recorder.calls)
    bot._connection.parse_interaction_create(payload)
    async with asyncio.timeout(timeout):
        while True:
            await asyncio.sleep(0.01)
            busy = [t for t in asyncio.all_tasks()
                    if t.get_name().startswith(("CommandTree-invoker", "discord-ui-modal"))
                    and not t.done()]
            if len(recorder.calls) > before and not busy:
                return


def make_other_bot(guild: discord.Guild) -> discord.Member:
    """Another bot account in the guild (the bot must never answer it)."""
    data = factories.make_user_dict("OtherBot", "0007", None, bot=True)
    user = backend.get_state().store_user(data)
    return backend.make_member(user, guild)


def make_role(guild: discord.Guild, name: str, **permissions) -> discord.Role:
    return backend.make_role(name, guild, permissions=discord.Permissions(**permissions).value)


async def cleanup(bot=None) -> None:
    """Drain dpytest's queues; fail when an event handler of `bot` raised."""
    await dpytest.empty_queue()
    if bot is not None:
        assert bot.event_errors == [], bot.event_errors
