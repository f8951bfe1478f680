"""What members see of the commands, and syncing them on demand: `python -m bot commands
--json` prints what a sync sends without connecting to anything; `python -m bot sync` sends it;
the bot never syncs when it starts. Roles are recognised by id as well as by name."""

from __future__ import annotations

import json
import subprocess
import sys

import discord
import discord.ext.test as dpytest
from discord.ext.test import factories
from discord_helpers import make_role, member, sent_messages, slash_as
from paths import REPO
from subprocess_env import clean_env

from bot.core.local_redis import free_port
from bot.frontends.discord.app import build_bot
from bot.frontends.discord.cogs.replies import THUMBS_UP
from bot.frontends.discord.command_tree import command_payloads, sync_tree

MANAGE_SERVER = str(discord.Permissions(manage_guild=True).value)
MANAGE_MESSAGES = str(discord.Permissions(manage_messages=True).value)
ADMIN_GROUPS = {"style", "adapter", "train", "chat", "modlog", "review", "moderators"}
ADMIN_MENUS = {"Add to exam", "Remove from exam"}


def run_bot_cli(tmp_path, *args: str, **env) -> subprocess.CompletedProcess:
    environment = {**clean_env(), "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", "bot", *args], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)


def test_commands_json_is_what_a_sync_sends_without_connecting(tmp_path):
    # Neither Redis nor a model nor a token is there: nothing may be reached.
    done = run_bot_cli(tmp_path, "commands", "--json",
                       REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                       MODEL_NAME=str(tmp_path / "no-such-model"))
    assert done.returncode == 0, done.stderr
    payloads = {p["name"]: p for p in json.loads(done.stdout)}

    assert set(payloads) == ADMIN_GROUPS | ADMIN_MENUS | {"forget", "stats",
                                                          "Teach a better reply"}
    for name in ADMIN_GROUPS | ADMIN_MENUS:  # on the group: Discord ignores it on subcommands
        assert str(payloads[name]["default_member_permissions"]) == MANAGE_SERVER, name
        assert payloads[name]["contexts"] == [0] and payloads[name]["dm_permission"] is False
    for name in ("stats", "Teach a better reply"):
        assert str(payloads[name]["default_member_permissions"]) == MANAGE_MESSAGES, name
        assert payloads[name]["contexts"] == [0]
    forget = payloads["forget"]
    assert forget["default_member_permissions"] is None and forget["contexts"] == [0, 1]
    for name in {"Teach a better reply"} | ADMIN_MENUS:
        assert payloads[name]["type"] == 3, name  # a message menu
    # What Discord refuses in a command: names over 32 characters, descriptions over 100.
    for payload in payloads.values():
        for item in [payload, *payload.get("options", []),
                     *(o for p in payload.get("options", []) for o in p.get("options", []))]:
            assert len(item["name"]) <= 32 and len(item.get("description", "")) <= 100, item


def test_commands_lists_them_for_people(tmp_path):
    done = run_bot_cli(tmp_path, "commands", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 0, done.stderr
    assert "/style (set, show, clear): shown to manage_guild; servers only" in done.stdout
    assert "/forget (me): shown to everyone; servers and DMs" in done.stdout
    assert "/review (list, approve, reject): shown to manage_guild; servers only" in done.stdout
    assert "/moderators (distrust, trust): shown to manage_guild; servers only" in done.stdout
    assert "menu Add to exam: shown to manage_guild; servers only" in done.stdout


def test_sync_needs_the_token_and_says_so(tmp_path):
    done = run_bot_cli(tmp_path, "sync", "--guild", "123")
    assert done.returncode == 2 and "DISCORD_TOKEN is not set" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_bot_does_not_sync_when_it_starts(fast, runtime):
    bot = build_bot(fast, runtime)
    calls = []

    async def recorded(*args, **kwargs):
        calls.append((args, kwargs))
        return []

    bot.http.bulk_upsert_global_commands = bot.http.bulk_upsert_guild_commands = recorded
    await bot._async_setup_hook()
    await bot.setup_hook()

    assert calls == []
    assert {c.name for c in bot.tree.get_commands()} >= ADMIN_GROUPS  # the tree is there


async def test_sync_sends_the_payloads_globally_or_to_one_server(bot):
    bot._connection.application_id = bot.user.id
    sent = []

    def upsert(where):
        async def record(application_id, *args, payload):
            sent.append((where, args, payload))
            return [{"description": "", **p, "id": str(factories.make_id()),
                     "application_id": str(application_id),
                     "version": "1"} for p in payload]
        return record

    bot.http.bulk_upsert_global_commands = upsert("global")
    bot.http.bulk_upsert_guild_commands = upsert("guild")

    said = await sync_tree(bot, None)
    assert said.startswith("synced 12 commands to every server (global): ")
    assert sent[-1] == ("global", (), command_payloads(bot))

    said = await sync_tree(bot, 4242)
    assert said.startswith("synced 12 commands to server 4242: ")
    where, args, payload = sent[-1]
    assert (where, args) == ("guild", (4242,))
    assert [p["name"] for p in payload] == [p["name"] for p in command_payloads(bot)]

    said = await sync_tree(bot, 4242, clear=True)
    assert said == "removed the commands from server 4242" and sent[-1][2] == []


async def test_a_moderator_role_given_by_id_counts(bot, store, channel, monkeypatch):
    role = make_role(channel.guild, "Support Crew")  # named unlike MODERATOR_ROLE, no powers
    await dpytest.add_role(member("bob"), role)
    monkeypatch.setattr(bot.settings, "moderator_role", str(role.id))
    await dpytest.message(f"<@{bot.user.id}> rate me", member=member("alice"))
    [reply] = await sent_messages()

    await dpytest.add_reaction(member("bob"), reply, THUMBS_UP)

    exchange = await store.exchanges.for_message(reply.id)
    assert await store.exchanges.ratings(exchange.id) == {store.user_hash(member("bob").id): 1}


async def test_an_admin_role_given_by_id_counts(bot, store, channel, monkeypatch):
    role = make_role(channel.guild, "Keepers")
    await dpytest.add_role(member("bob"), role)
    monkeypatch.setattr(bot.settings, "admin_role", str(role.id))

    done = await slash_as(bot, member("bob"), channel, "chat", "on")

    assert done["content"] == "I now answer every message in this channel."
    assert await store.chat.is_on(channel.id)
