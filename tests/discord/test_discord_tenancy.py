"""Two servers through the real client, command tree and console: each learns its own voice,
and neither server's admins nor moderators can act on the other's adapter or data."""

from __future__ import annotations

import discord.ext.test as dpytest
import pytest
from discord.ext.test import backend
from discord_helpers import cleanup, make_bot, make_role, member, sent_messages, slash_as
from waiting import eventually

from bot.frontends.console import Console
from bot.frontends.discord.cogs.replies import THUMBS_UP
from bot.runtime import Runtime
from trainer.cycle import run_cycle

QA = [("what are your opening hours", "we are open nine to five"),
      ("how do i reset my password", "open settings and choose reset password"),
      ("where is my parcel", "your parcel is on its way")]


@pytest.fixture
async def two(fast, store, engine):
    """The bot in two servers, inside a runtime that follows the registry; an admin and a
    moderator in each, and server two's moderator is also a plain member of server one."""
    async with Runtime(fast, store=store, generator=engine) as runtime:
        bot = await make_bot(runtime, guilds=2)
        one, two = dpytest.get_config().guilds
        for guild in (one, two):
            await dpytest.add_role(member("admin", guild),
                                   make_role(guild, "Staff", manage_guild=True))
            await dpytest.add_role(member("mod", guild), make_role(guild, fast.moderator_role))
        outsider = backend.make_member(member("mod", two)._user, one)  # plain in server one
        yield bot, runtime, one, two, outsider
        await cleanup(bot)


def text_channel(guild):
    return guild.text_channels[0]


async def ask(bot, guild, text: str):
    """alice asks the bot in `guild`; returns the reply message and its stored exchange."""
    await dpytest.message(f"<@{bot.user.id}> {text}", channel=text_channel(guild),
                          member=member("alice", guild))
    [reply] = await sent_messages()
    return reply, await bot.store.exchanges.for_message(reply.id)


async def test_training_in_one_server_changes_only_its_replies(two, fast, store):
    bot, runtime, one, two_, _ = two
    _, first = await ask(bot, one, "hello there")
    _, other = await ask(bot, two_, "hello there")
    assert (first.tenant, other.tenant) == (one.id, two_.id)
    assert first.adapter_version == other.adapter_version == "base"

    # Server one's moderators teach through the console (server one's own voice)...
    console = Console(runtime, guild_id=one.id)
    for n in range(24):
        question, answer = QA[n % len(QA)]
        await console.handle_line(f"{question} ({n})")
        assert await console.handle_line(f"/teach {answer}") == \
            "stored your better reply for the last message"
    settings = fast.model_copy(update={"search_trials": 2, "max_epochs": 2,
                                       "search_lr_min": 5e-3, "search_lr_max": 2e-2})
    outcome = await run_cycle(settings, store, one.id, force=True, progress=False)
    assert outcome.outcome == "promoted" and outcome.guild == one.id, outcome.reason
    await eventually(lambda: runtime.router.version_for(one.id) == outcome.version)

    # ... so server one is answered by its new adapter, server two still by the base model.
    _, after_one = await ask(bot, one, "hello again")
    _, after_two = await ask(bot, two_, "hello again")
    assert after_one.adapter_version == outcome.version
    assert after_two.adapter_version == "base"
    assert await store.tenant(two_.id).exchanges.rated() == []  # no data crossed over
    # The admins of server two see their own adapter, not server one's.
    status = await slash_as(bot, member("admin", two_), text_channel(two_), "adapter", "status")
    assert "Active adapter: base" in status["content"]


async def test_one_servers_rollback_and_train_now_leave_the_other_alone(two, store,
                                                                         tiny_model_dir,
                                                                         blobs):
    from bot.core.store import AdapterRecord

    bot, runtime, one, two_, _ = two
    versions = {}
    for guild, blob_names in ((one, ["v1"]), (two_, ["v1", "v2"])):
        registry = store.tenant(guild.id).registry
        for name in blob_names:
            record = await registry.save(AdapterRecord(base_model=str(tiny_model_dir)),
                                         blobs[name])
            await registry.activate(record.version)
            versions.setdefault(guild.id, []).append(record.version)
    await eventually(lambda: runtime.router.version_for(two_.id) == versions[two_.id][-1])

    rolled = await slash_as(bot, member("admin", two_), text_channel(two_), "adapter",
                            "rollback")
    assert rolled["content"] == (f"Rolled back from {versions[two_.id][1]}: now serving "
                                 f"{versions[two_.id][0]}.")
    done = await slash_as(bot, member("admin", two_), text_channel(two_), "train", "now")
    assert "Training requested" in done["content"]

    assert await store.tenant(one.id).registry.active() == versions[one.id][0]
    assert runtime.router.version_for(one.id) == versions[one.id][0]
    assert await store.tenant(one.id).trainer.take_request() is None
    assert (await store.tenant(two_.id).trainer.take_request())["by"].startswith("discord:")


async def test_a_moderator_of_another_server_cannot_rate_here(two, store):
    bot, _, one, two_, outsider = two
    reply, exchange = await ask(bot, one, "rate me")
    # Server two's moderator, a plain member here, reacts: the reaction is not a rating.
    await dpytest.add_reaction(outsider, reply, THUMBS_UP)
    await dpytest.run_all_events()
    assert await store.exchanges.ratings(exchange.id) == {}
    # Server one's own moderator rates it; it counts in server one only.
    await dpytest.add_reaction(member("mod", one), reply, THUMBS_UP)
    await dpytest.run_all_events()
    assert list((await store.exchanges.ratings(exchange.id)).values()) == [1]
    assert [r.exchange.id for r in await store.tenant(one.id).exchanges.rated()] == [
        exchange.id]
    assert await store.tenant(two_.id).exchanges.rated() == []
    # Even through the store, server two cannot rate server one's reply.
    answer = await bot.actions.rate(two_.id, exchange.id, member("mod", two_).id, 1)
    assert not answer.ok and "another server" in answer.text


async def test_the_bot_leaves_servers_not_allowed_at_start_and_on_join(two, caplog):
    bot, _, one, two_, _ = two
    bot.settings = bot.settings.model_copy(update={"allowed_guild_ids": str(one.id)})
    await bot.on_ready()
    assert bot.left_guilds == [two_.id]
    assert sum(f"leaving server {two_.id}" in r.message for r in caplog.records) == 1
    await bot.on_guild_join(one)  # an allowed server is kept
    await bot.on_guild_join(two_)
    assert bot.left_guilds == [two_.id, two_.id]
    bot.settings = bot.settings.model_copy(update={"allowed_guild_ids": ""})  # any server
    await bot.on_guild_join(two_)
    assert bot.left_guilds == [two_.id, two_.id]
