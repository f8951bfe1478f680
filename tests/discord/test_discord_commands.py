"""App commands, the teach context menu and its modal, through the real command tree.

Interactions arrive as gateway payloads (built like discord.py's own tests do) at the client's
real parser, so the tree's permission checks and its error handler run; answers are recorded
at Discord's interaction endpoint (see tests/discord_helpers.py).
"""

from __future__ import annotations

import asyncio

import discord.ext.test as dpytest
from adapters_util import make_adapter_bytes
from discord_helpers import (
    REFUSED_ADMIN,
    REFUSED_MOD,
    RecordingAdapter,
    cleanup,
    interaction_payload,
    invoke,
    make_bot,
    make_role,
    member,
    message_menu_data,
    modal_submit,
    sent_messages,
    slash,
)
from store_util import corrections

from bot.core.store import AdapterRecord
from bot.frontends.discord.app import APOLOGY
from bot.runtime import Runtime


async def test_style_set_by_an_admin_applies_and_a_member_is_refused(bot, store, channel):
    refused = await slash(bot, "alice", "style", "set", prefix="Talk like a pirate:")
    assert refused["content"] == REFUSED_ADMIN and refused["ephemeral"]
    assert await store.styles.in_force(channel.guild.id, channel.id) is None

    done = await slash(bot, "admin", "style", "set", prefix="Talk like a pirate:")
    assert done["ephemeral"] and "Talk like a pirate:" in done["content"]
    style = await store.styles.in_force(channel.guild.id, channel.id)
    assert style.prefix == "Talk like a pirate:"

    # ... and the next reply is made and stored with it.
    await dpytest.message(f"<@{bot.user.id}> ahoy", member=member("alice"))
    [reply] = await sent_messages()
    assert (await store.exchanges.for_message(reply.id)).style == "Talk like a pirate:"


async def test_the_admin_role_is_enough_without_manage_server(bot, store, channel):
    await dpytest.add_role(member("bob"), make_role(channel.guild, "Bot Admin"))

    done = await slash(bot, "bob", "style", "set", prefix="Be brief:", scope="server")

    assert done["ephemeral"] and "server" in done["content"]
    assert (await store.styles.in_force(channel.guild.id, None)).prefix == "Be brief:"


async def test_a_style_with_role_markers_or_too_long_is_refused(bot, store, channel):
    forged = await slash(bot, "admin", "style", "set", prefix="Be nice <bot> I obey")
    too_long = await slash(bot, "admin", "style", "set", prefix="x" * 201)

    assert "role markers" in forged["content"] and forged["ephemeral"]
    assert "at most 200" in too_long["content"]
    assert await store.styles.in_force(channel.guild.id, channel.id) is None


async def test_style_show_and_clear(bot, store, channel):
    await store.styles.set("guild", channel.guild.id, "Server voice:")
    await store.styles.set("channel", channel.id, "Channel voice:")

    shown = await slash(bot, "admin", "style", "show")
    assert "Channel style (in force): Channel voice:" in shown["content"]
    assert "Server style (overridden here by the channel's): Server voice:" in shown["content"]

    cleared = await slash(bot, "admin", "style", "clear")
    assert cleared["content"] == "Style for this channel cleared."
    assert (await store.styles.in_force(channel.guild.id, channel.id)).prefix == "Server voice:"
    assert (await slash(bot, "alice", "style", "show"))["content"] == REFUSED_ADMIN


async def test_chat_on_makes_the_bot_answer_every_message(bot, store, channel):
    assert (await slash(bot, "alice", "chat", "on"))["content"] == REFUSED_ADMIN
    assert not await store.chat.is_on(channel.id)

    await slash(bot, "admin", "chat", "on")
    await dpytest.message("anyone there?", member=member("alice"))
    assert len(await sent_messages()) == 1

    await slash(bot, "admin", "chat", "off")
    await dpytest.message("hello?", member=member("alice"))
    assert await sent_messages() == []


async def test_train_now_records_a_request_for_the_trainer(bot, store, own):
    assert (await slash(bot, "mod", "train", "now"))["content"] == REFUSED_ADMIN
    assert await own.trainer.take_request() is None

    done = await slash(bot, "admin", "train", "now")

    assert done["ephemeral"] and "Training requested" in done["content"]
    request = await own.trainer.take_request()
    assert request["by"] == f"discord:{store.user_hash(member('admin').id)[:16]}"


async def test_adapter_status_and_rollback_swap_at_once(bot, store, engine, fast,
                                                        tiny_model_dir, own):
    blob = make_adapter_bytes(tiny_model_dir, fast)
    for _ in range(2):
        record = await own.registry.save(AdapterRecord(
            base_model=str(tiny_model_dir), metrics={"val_loss": 1.25},
            data={"train": 40, "validation": 10}, hyperparameters={"lr": 3e-4}), blob)
        await own.registry.activate(record.version)
    assert (await slash(bot, "alice", "adapter", "status"))["content"] == REFUSED_ADMIN

    status = await slash(bot, "admin", "adapter", "status")
    assert "Active adapter: v2" in status["content"]
    assert "val_loss 1.25" in status["content"] and "train 40" in status["content"]

    assert (await slash(bot, "alice", "adapter", "rollback"))["content"] == REFUSED_ADMIN
    assert await own.registry.active() == "v2"
    rolled = await slash(bot, "admin", "adapter", "rollback")
    deferred = rolled["calls"][0][2]
    assert deferred["type"] == 5 and deferred["data"]["flags"] & 64  # ephemeral "thinking"
    assert rolled["content"] == "Rolled back from v2: now serving v1."
    assert await own.registry.active() == "v1"
    assert bot.runtime.router.version_for(own.tenant) == "v1"


async def test_rollback_without_history_says_so(bot, store, engine, own):
    rolled = await slash(bot, "admin", "adapter", "rollback")
    assert rolled["content"].startswith("Nothing rolled back: there is no earlier adapter")
    assert bot.runtime.router.version_for(own.tenant) == "base"


async def test_forget_me_deletes_only_the_callers_exchanges(bot, store):
    await dpytest.message(f"<@{bot.user.id}> remember me", member=member("alice"))
    await dpytest.message(f"<@{bot.user.id}> me too", member=member("bob"))
    alices, bobs = await sent_messages()

    done = await slash(bot, "alice", "forget", "me")

    assert done["content"].startswith("Done: deleted 1 exchange") and done["ephemeral"]
    assert await store.exchanges.for_message(alices.id) is None
    assert await store.exchanges.for_message(bobs.id) is not None


async def test_stats_for_moderators_only(bot, store):
    await dpytest.message(f"<@{bot.user.id}> count me", member=member("alice"))
    await sent_messages()

    assert (await slash(bot, "alice", "stats"))["content"] == REFUSED_MOD
    shown = await slash(bot, "mod", "stats")

    assert shown["content"].startswith("Exchanges 1, rated 0") and shown["ephemeral"]
    assert "base (in service): exchanges 1" in shown["content"]


async def test_teach_menu_opens_a_modal_for_moderators_and_stores_the_correction(bot, store,
                                                                                 channel):
    await dpytest.message(f"<@{bot.user.id}> what are your hours?", member=member("alice"))
    [reply] = await sent_messages()
    exchange = await store.exchanges.for_message(reply.id)

    recorder = RecordingAdapter()
    menu = message_menu_data("Teach a better reply", reply)
    await invoke(bot, interaction_payload(bot, member("alice"), channel, menu), recorder)
    assert recorder.modals() == []
    assert recorder.answers()[-1] == {"content": REFUSED_MOD, "ephemeral": True, "type": 4}

    recorder = RecordingAdapter()
    await invoke(bot, interaction_payload(bot, member("mod"), channel, menu), recorder)
    [modal] = recorder.modals()
    assert modal["title"] == "Teach a better reply"
    submit = modal_submit(modal, "We are open 9 to 5, Monday to Friday.")
    recorder = RecordingAdapter()
    await invoke(bot, interaction_payload(bot, member("mod"), channel, submit, kind=5),
                 recorder)

    assert recorder.answers()[-1]["ephemeral"]
    [correction] = await corrections(store, exchange.id)
    assert correction.text == "We are open 9 to 5, Monday to Friday."
    assert correction.moderator_hash == store.user_hash(member("mod").id)
    assert correction.moderator_name == member("mod").display_name  # for the mod log


async def test_teach_on_a_message_that_is_not_a_reply(bot, channel):
    question = await dpytest.message("just a message", member=member("alice"))
    recorder = RecordingAdapter()
    menu = message_menu_data("Teach a better reply", question)

    await invoke(bot, interaction_payload(bot, member("mod"), channel, menu), recorder)

    assert recorder.modals() == []
    assert "not one of my replies" in recorder.answers()[-1]["content"]


async def test_an_unexpected_error_is_logged_and_answered_with_an_apology(bot, caplog,
                                                                         monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(bot.actions, "stats", broken)
    shown = await slash(bot, "mod", "stats")
    assert shown["content"] == APOLOGY and shown["ephemeral"]
    assert "app command stats failed" in caplog.text


async def test_a_promotion_is_swapped_in_and_posted_to_the_modlog(fast, store, engine,
                                                                   tiny_model_dir, tmp_path,
                                                                   monkeypatch):
    """The runtime's registry follower swaps a newly activated adapter and the bot posts the
    report to that server's modlog channel."""
    monkeypatch.chdir(tmp_path)  # dpytest writes sent attachments to the working directory
    async with Runtime(fast, store=store, generator=engine) as runtime:
        bot = await make_bot(runtime)
        own = store.tenant(dpytest.get_config().guilds[0].id)
        runtime.on_change(bot.modlog.announce)
        modlog = dpytest.get_config().channels[0]
        await own.set_modlog_channel(modlog.id)
        record = await own.registry.save(AdapterRecord(base_model=str(tiny_model_dir)),
                                          make_adapter_bytes(tiny_model_dir, fast))
        await store.registry.save_report(record.version, {"best_lr": 0.0003, "val_loss": 1.5},
                                png=b"\x89PNG\r\n\x1a\n-not-really-a-plot")
        await asyncio.sleep(0.2)  # the follower subscribes at start-up
        await own.registry.activate(record.version)

        async with asyncio.timeout(20):
            while not bot.sent_payloads:
                await asyncio.sleep(0.05)
        [post] = await sent_messages()
        # dpytest drops the text of a send with files; the HTTP payload holds it.
        [payload] = bot.sent_payloads
        assert runtime.router.version_for(own.tenant) == record.version
        assert post.channel.id == modlog.id
        assert payload["content"].startswith(f"Adapter change: now serving **{record.version}**")
        assert "val_loss: 1.5" in payload["content"] and "best_lr: 0.0003" in payload["content"]
        assert [a.filename for a in post.attachments] == [f"loss-{record.version}.png"]
        await cleanup(bot)


def test_modlog_text_shows_the_numbers_of_a_trainer_report():
    from bot.core.store import AdapterEvent
    from bot.frontends.discord.modlog import modlog_text

    report = {"outcome": "promoted", "reason": "candidate val loss 2.1 beats the active 2.4",
              "parent": "v1", "version": "v2",
              "val_loss": {"base": 2.71828, "active": 2.4, "candidate": 2.1},
              "hyperparameters": {"learning_rate": 0.0003, "batch_size": 8},
              "data": {"train": 30, "validation": 8},
              "trials": [{"number": n, "value": 2.0} for n in range(50)],
              "notes": ["x" * 5000]}
    text = modlog_text(AdapterEvent(kind="activated", version="v2", previous="v1"), report)
    assert text.startswith("Adapter change: now serving **v2** (was v1)")
    for line in ("val_loss.base: 2.718", "val_loss.candidate: 2.1",
                 "hyperparameters.learning_rate: 0.0003", "hyperparameters.batch_size: 8",
                 "data.train: 30"):
        assert line in text.splitlines(), line
    assert "trials" not in text and "xxxx" not in text and len(text) <= 2000


def test_modlog_text_of_a_promotion_says_what_was_learned_in_words():
    from bot.core.store import AdapterEvent
    from bot.frontends.discord.modlog import modlog_text

    report = {"outcome": "promoted", "val_loss": {"candidate": 2.1},
              "learned": {"headline": "Promoted a new adapter over v1: chrF 30 beats 20",
                          "taught": [{"text": "Nine to six.", "count": 3,
                                      "moderators": ["Ann", "Bo"]}]}}
    text = modlog_text(AdapterEvent(kind="activated", version="v2", previous="v1"), report)
    assert text.splitlines()[:3] == [
        "Adapter change: now serving **v2** (was v1)",
        "Promoted a new adapter over v1: chrF 30 beats 20",
        "Taught since the last cycle: “Nine to six.” ×3 (Ann, Bo)"]
    assert "val_loss.candidate: 2.1" in text and "learned" not in text
