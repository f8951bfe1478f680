"""Helpers for driving the real bot through dpytest, and app commands through the real tree.

dpytest (0.7) emulates Discord's HTTP API for messages and reactions but has no interactions,
threads, system messages nor message references. What is added here stays at that same
boundary:
- `reply_message`, `user_message`, `system_message` and `make_thread` build gateway payloads
  (MESSAGE_CREATE with a `message_reference` or a message type, THREAD_CREATE) as Discord sends
  them and feed them to the client's real parser; `delete_messages` sends MESSAGE_DELETE or
  MESSAGE_DELETE_BULK.
- `invoke` builds an INTERACTION_CREATE payload (as discord.py's own tests do) and feeds it to
  the real `parse_interaction_create`, so the command tree, its checks and its error handler
  run, answering through `RecordingAdapter`.

What the fake Discord refuses and records (sends, edits, reactions) is in tests/discord_fake.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import traceback

import discord
import discord.ext.test as dpytest
from discord.ext.test import backend, callbacks, factories
from discord.webhook.async_ import async_context
from discord_fake import (  # noqa: F401 - tests take these from here too
    MESSAGE_LIMIT,
    FakeClock,
    RecordingAdapter,
    add_reaction_type,
    read_history,
    record_sends,
    refusal,
)

from bot.frontends.discord.app import build_bot
from bot.runtime import Runtime


@contextlib.asynccontextmanager
async def running_bot(settings, store, generator, *, guilds: int = 1):
    """`make_bot` in a runtime of its own on `store` and `generator` (for settings other than
    the `bot` fixture's); drained and checked at the end."""
    async with Runtime(settings, store=store, generator=generator) as runtime:
        bot = await make_bot(runtime, guilds=guilds)
        try:
            yield bot
        finally:
            await cleanup(bot)


async def make_bot(runtime: Runtime, *, guilds: int = 1):
    """The real bot in dpytest on what `runtime` built: `guilds` servers, each with a text
    channel and the members alice, bob, mod and admin (distinct users per server)."""
    bot = build_bot(runtime.settings, runtime)
    bot.refusals = []  # what the fake Discord refused, as (what, HTTP status, text)
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
    # Discord's default @everyone permissions include Send Messages in Threads (dpytest's
    # predate threads).
    for guild in dpytest.get_config().guilds:
        everyone = guild.default_role.permissions
        everyone.update(send_messages_in_threads=True)
        backend.update_role(guild.default_role, permissions=everyone.value)
    # dpytest's new connection state drops the client's options; carry over the one we set.
    bot._connection.allowed_mentions = allowed_mentions
    # dpytest swaps in its own connection state (without the loop a login would set); point
    # the command tree at it.
    bot._connection.loop = asyncio.get_running_loop()
    bot.tree._state = bot._connection
    bot.tree._http = bot.http
    bot._connection._command_tree = bot.tree
    add_reaction_type(bot._connection)
    # dpytest's own reaction bookkeeping miscounts a second emoji; record the bot's calls.
    bot.own_reactions = []

    async def record_reaction(message, emoji):
        bot.own_reactions.append((message.id, str(emoji)))
        bot.writes.append(("react", message.id, str(emoji)))

    callbacks.set_callback(record_reaction, "add_reaction")
    bot.typing_channels = []

    async def record_typing(channel):
        bot.typing_channels.append(channel.id)

    callbacks.set_callback(record_typing, "send_typing")

    async def record_delete(channel, message, reason=None):
        bot.writes.append(("delete", message.id, None))

    callbacks.set_callback(record_delete, "delete_message")
    record_sends(bot)
    read_history(bot)
    # dpytest does not emulate leaving a server; record it where discord.py calls Discord.
    bot.left_guilds = []

    async def leave_guild(guild_id):
        bot.left_guilds.append(int(guild_id))

    bot.http.leave_guild = leave_guild
    return bot


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


def user_message(content: str, author: discord.Member, channel, *, kind: int = 0,
                 attachments: list[dict] | None = None) -> discord.Message:
    """A message of type `kind` (0 default, 7 member join, 18 thread created, ...) with these
    attachments, delivered through the gateway parser as Discord sends it."""
    data = factories.make_message_dict(channel, author, content=content,
                                       mentions=backend.find_user_mentions(content,
                                                                           channel.guild))
    data["type"] = kind
    data["attachments"] = attachments or []
    state = backend.get_state()
    state.parse_message_create(data)
    backend._cur_config.messages.setdefault(channel.id, []).append(data)
    return state._get_message(data["id"])


def attachment() -> dict:
    return {"id": str(factories.make_id()), "filename": "photo.png", "size": 10,
            "url": "https://cdn.example/photo.png", "proxy_url": "https://cdn.example/p.png"}


def make_thread(parent, name: str = "a thread", owner: discord.Member | None = None
                ) -> discord.Thread:
    """A public thread in `parent` (a text or forum channel), as THREAD_CREATE brings it."""
    thread_id = factories.make_id()
    backend.get_state().parse_thread_create({
        "id": str(thread_id), "guild_id": str(parent.guild.id), "parent_id": str(parent.id),
        "owner_id": str((owner or member("alice", parent.guild)).id), "name": name,
        "type": 11, "message_count": 0, "member_count": 1, "rate_limit_per_user": 0,
        "flags": 0, "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                        "archive_timestamp": "2026-01-01T00:00:00+00:00",
                                        "locked": False}})
    return parent.guild.get_thread(thread_id)


def make_forum(guild: discord.Guild, name: str = "questions") -> discord.ForumChannel:
    """A forum channel (its posts are threads), as CHANNEL_CREATE brings it."""
    forum_id = factories.make_id()
    backend.get_state().parse_channel_create({
        "id": str(forum_id), "guild_id": str(guild.id), "type": 15, "name": name,
        "position": 9, "permission_overwrites": [], "flags": 0, "available_tags": []})
    return guild.get_channel(forum_id)


async def delete_messages(*messages: discord.Message, wait: bool = True) -> None:
    """Someone deletes these messages: one MESSAGE_DELETE, or MESSAGE_DELETE_BULK for
    several (as a moderator's purge does); gone from the fake's channel too. `wait`: until
    the bot's handlers are done (not from inside a handler: it would wait for itself)."""
    channel = messages[0].channel
    kept = backend._cur_config.messages.get(channel.id, [])
    gone = {m.id for m in messages}
    backend._cur_config.messages[channel.id] = [m for m in kept if int(m["id"]) not in gone]
    data = {"channel_id": str(channel.id)}
    if channel.guild is not None:
        data["guild_id"] = str(channel.guild.id)
    state = backend.get_state()
    if len(messages) == 1:
        state.parse_message_delete({**data, "id": str(messages[0].id)})
    else:
        state.parse_message_delete_bulk({**data, "ids": [str(i) for i in gone]})
    if wait:
        await dpytest.run_all_events()


def vanish(*messages: discord.Message) -> None:
    """These messages are deleted while the bot is not connected: gone from the fake Discord,
    and no event ever reaches the bot."""
    for message in messages:
        kept = backend._cur_config.messages.get(message.channel.id, [])
        backend._cur_config.messages[message.channel.id] = [
            m for m in kept if int(m["id"]) != message.id]


def make_text_channel(guild: discord.Guild, name: str = "second") -> discord.TextChannel:
    """Another text channel, as CHANNEL_CREATE brings it."""
    channel_id = factories.make_id()
    backend.get_state().parse_channel_create({
        "id": str(channel_id), "guild_id": str(guild.id), "type": 0, "name": name,
        "position": 8, "permission_overwrites": [], "flags": 0})
    return guild.get_channel(channel_id)


async def delete_channel(channel, *, seen: bool = True) -> None:
    """Someone deletes a channel or thread (its threads and messages go with it). `seen`: the
    bot gets CHANNEL_DELETE or THREAD_DELETE, as Discord sends it (no per-message deletes);
    else it happens while the bot is not connected."""
    guild, state = channel.guild, backend.get_state()
    doomed = [channel, *getattr(channel, "threads", [])]
    for gone in doomed:
        backend._cur_config.messages.pop(gone.id, None)
    data = {"id": str(channel.id), "guild_id": str(guild.id), "type": channel.type.value}
    if not seen:
        for gone in doomed:
            if isinstance(gone, discord.Thread):
                guild._remove_thread(gone)
            else:
                guild._remove_channel(gone)
    elif isinstance(channel, discord.Thread):
        state.parse_thread_delete({**data, "parent_id": str(channel.parent_id)})
    else:
        state.parse_channel_delete({**data, "name": channel.name, "position": 0,
                                    "permission_overwrites": []})
    await dpytest.run_all_events()


async def dm_reply(name: str, text: str = "hello in private") -> discord.Message:
    """Member `name` writes `text` to the bot in a DM; the bot's one reply."""
    who = member(name)
    await dpytest.message(text, channel=await who.create_dm(), member=who)
    [reply] = await sent_messages()
    return reply


async def sent_messages() -> list[discord.Message]:
    """Every message the bot sent since the last call, oldest first."""
    await dpytest.run_all_events()
    found = []
    while not dpytest.sent_queue.empty():
        found.append(dpytest.get_message())
    return found


def _member_payload(who: discord.Member, channel) -> dict:
    return {"user": factories.dict_from_user(who._user),
            "roles": [str(r.id) for r in who.roles if r != who.guild.default_role],
            "joined_at": None, "deaf": False, "mute": False, "flags": 0, "nick": who.nick,
            # Discord sends the member's resolved permissions in the channel.
            "permissions": str(channel.permissions_for(who).value)}


def interaction_payload(bot, who: discord.Member, channel, data: dict,
                        kind: int = 2) -> dict:
    """An INTERACTION_CREATE payload from `who` in `channel` (a thread's names its parent)."""
    raw_channel = {"id": str(channel.id), "type": channel.type.value,
                   "guild_id": str(channel.guild.id), "name": channel.name, "position": 0,
                   "permission_overwrites": []}
    if isinstance(channel, discord.Thread):
        raw_channel.update(parent_id=str(channel.parent_id), owner_id=str(channel.owner_id),
                           thread_metadata={"archived": False, "auto_archive_duration": 1440,
                                            "archive_timestamp": "2026-01-01T00:00:00+00:00",
                                            "locked": False})
    interaction_id = str(factories.make_id())
    return {"id": interaction_id, "application_id": str(bot.user.id), "type": kind,
            "token": f"token-{interaction_id}", "version": 1, "locale": "en-US",
            "attachment_size_limit": 8 * 1024 * 1024, "guild_id": str(channel.guild.id),
            "channel_id": str(channel.id), "channel": raw_channel,
            "member": _member_payload(who, channel), "data": data,
            # Discord sends the bot's own permissions in the channel too.
            "app_permissions": str(channel.permissions_for(channel.guild.me).value)}


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


def modal_submit(modal: dict, text: str) -> dict:
    """The data Discord sends when someone submits `modal` (as sent) with `text` typed in."""
    [label] = [c for c in modal["components"] if c["type"] == 18]
    return {"custom_id": modal["custom_id"], "components": [{"type": 18, "component": {
        "type": 4, "custom_id": label["component"]["custom_id"], "value": text}}]}


REFUSED_ADMIN = "Only server admins can do that."
REFUSED_MOD = "Only moderators can do that."


async def slash(bot, who: str, *names: str, **options) -> dict:
    """Run `/names... options` as member `who` in the first channel."""
    return await slash_as(bot, member(who), dpytest.get_config().channels[0], *names, **options)


async def slash_as(bot, who: discord.Member, channel, *names: str,
                   recorder: RecordingAdapter | None = None, **options) -> dict:
    """Run `/names... options` as `who` in `channel`; returns the last answer it gave (with
    every recorded call under "calls")."""
    recorder = recorder or RecordingAdapter()
    await invoke(bot, interaction_payload(bot, who, channel, slash_data(*names, **options)),
                 recorder)
    answers = recorder.answers()
    assert answers, recorder.calls
    return answers[-1] | {"calls": recorder.calls}


async def invoke(bot, payload: dict, recorder: RecordingAdapter, timeout: float = 10.0) -> None:
    """Deliver an interaction through the gateway parser and wait until it is answered."""
    async_context.set(recorder)
    before = len(recorder.calls), len(recorder.refused)
    recorder.arrived(payload)
    bot._connection.parse_interaction_create(payload)
    async with asyncio.timeout(timeout):
        while True:
            await asyncio.sleep(0.01)
            busy = [t for t in asyncio.all_tasks()
                    if t.get_name().startswith(("CommandTree-invoker", "discord-ui-modal"))
                    and not t.done()]
            if (len(recorder.calls), len(recorder.refused)) != before and not busy:
                await dpytest.run_all_events()  # listeners of the interaction finish too
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
