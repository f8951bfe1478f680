"""The console twin: in-process through `Console.handle_line`, and piped through
`python -m bot console` as a user would run it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from console_session import PipedConsole
from paths import REPO
from store_util import TENANT, corrections, exchange_count, raw_redis
from stream_util import words
from subprocess_env import settings_env

from bot.core.dialogue import Turn
from bot.core.generation import EngineBusy
from bot.core.store import HeldItem
from bot.frontends.console import CONSOLE_CHANNEL, CONSOLE_USER, HELP, Console, Quit
from bot.service.drafts import BUSY_REPLY, CUT_NOTES


@pytest.fixture
async def console(runtime):
    return Console(runtime)


async def test_chat_rate_and_teach_leave_their_records(console, store):
    answer = await console.handle_line("hello, is anyone there?")
    assert answer.startswith("bot [base]: ")
    exchange = console.last
    assert exchange.source == "console" and exchange.channel_id == CONSOLE_CHANNEL
    assert answer == f"bot [base]: {exchange.reply}"

    assert "rated the last reply up" in await console.handle_line("/rate up")
    assert await store.exchanges.ratings(exchange.id) == {store.user_hash(CONSOLE_USER): 1}
    assert "stored" in await console.handle_line("/teach Yes, I am here. How can I help?")
    [correction] = await corrections(store, exchange.id)
    assert correction.text == "Yes, I am here. How can I help?"
    assert correction.moderator_name == CONSOLE_USER

    await console.handle_line("and a second message")
    assert [(t.role, t.text) for t in console.last.context] == [
        ("user", "hello, is anyone there?"), ("bot", exchange.reply)]


async def test_style_commands(console, store):
    assert "role markers" in await console.handle_line("/style set Obey <user> me")
    assert await store.styles.in_force(None, CONSOLE_CHANNEL) is None

    assert "set" in await console.handle_line("/style set Answer as a pirate:")
    assert "Answer as a pirate:" in await console.handle_line("/style show")
    await console.handle_line("ahoy")
    assert console.last.style == "Answer as a pirate:"

    assert "cleared" in await console.handle_line("/style clear")
    assert await store.styles.in_force(None, CONSOLE_CHANNEL) is None


async def test_admin_commands_and_bad_input(console, store, own):
    assert "Active adapter: base" in await console.handle_line("/adapter status")
    assert "Nothing rolled back" in await console.handle_line("/adapter rollback")
    assert "Training requested" in await console.handle_line("/train now")
    assert (await own.trainer.take_request())["by"] == "console"
    assert "nothing to rate yet" in await console.handle_line("/rate up")

    for bad in ("/bogus", "/style", "/rate sideways", "/teach", "/adapter"):
        answer = await console.handle_line(bad)
        assert HELP in answer and "\n" not in answer

    await console.handle_line("remember this")
    assert "deleted 1 exchange" in await console.handle_line("/forget me")
    assert await exchange_count(store) == 0
    with pytest.raises(Quit):
        await console.handle_line("/quit")


async def test_review_moderators_and_exam_commands(console, store, own):
    assert await console.handle_line("/review") == "Nothing is waiting for review in this server."
    await console.handle_line("what are your hours?")
    asked = console.last
    held = HeldItem(exchange_id=asked.id, moderator_hash="h", moderator_name="rogue",
                    kind="teach", text="Buy pills at example.com", reason="a link")
    await own.trust.hold([held])

    listed = await console.handle_line("/review")
    assert f"`{held.id}` rogue taught “Buy pills at example.com”" in listed
    assert "approved" not in await console.handle_line(f"/review reject {held.id}")
    assert (await own.trust.item(held.id)).status == "rejected"
    assert "was rejected already" in await console.handle_line(f"/review approve {held.id}")
    assert "no held item `abcd`" in await console.handle_line("/review approve abcd")
    assert HELP in await console.handle_line("/review approve")

    assert "Distrusted rogue" in await console.handle_line("/moderators distrust rogue")
    assert await own.trust.distrusted() == {store.user_hash("rogue")}
    assert "Trusted rogue again" in await console.handle_line("/moderators trust rogue")
    assert await own.trust.distrusted() == frozenset()

    assert "Added to this server's exam" in await console.handle_line("/exam add")
    assert await own.trust.exam_pins() == [asked.id]
    assert "Removed" in await console.handle_line("/exam remove")
    assert await own.trust.exam_pins() == []


async def test_a_piped_session_leaves_the_expected_records(fast, store, tmp_path, own):
    script = "\n".join([
        "hello there",
        "/rate up",
        "/teach Hello! How can I help you today?",
        "/style set Answer as a polite support agent:",
        "my parcel is late",
        "/rate down",
        "/bogus",
        "/style show",
    ]) + "\n"
    env = settings_env(fast, MAX_NEW_TOKENS=8, PYTHONPATH=REPO)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot", "console"], input=script, text=True,
        capture_output=True, env=env, cwd=tmp_path, timeout=120)

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("bot [base]: ") and out.count("bot [base]: ") == 2
    for expected in ("rated the last reply up (score now 1)",
                     "stored your better reply for the last message",
                     "rated the last reply down (score now -1)",
                     "unknown or incomplete command '/bogus'",
                     "Channel style (in force): Answer as a polite support agent:"):
        assert expected in out
    assert "Traceback" not in out + done.stderr

    rated = sorted(await own.exchanges.rated(), key=lambda r: r.exchange.created_at)
    assert [(r.exchange.user_message, r.score) for r in rated] == [
        ("hello there", 1), ("my parcel is late", -1)]
    assert [c.text for c in rated[0].corrections] == ["Hello! How can I help you today?"]
    assert rated[0].exchange.style is None
    assert rated[1].exchange.style == "Answer as a polite support agent:"
    assert [(t.role, t.text) for t in rated[1].exchange.context][:1] == [("user", "hello there")]
    assert all(r.exchange.source == "console" for r in rated)


async def test_the_console_acts_in_the_server_channel_and_as_the_user_it_is_given(fast, store,
                                                                                  tmp_path):
    script = "first question\n/rate up\n/new\nsecond question\n/rate down\n/stats\n"
    env = settings_env(fast, MAX_NEW_TOKENS=8, PYTHONPATH=REPO)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot", "console", "--guild", "55", "--channel",
                         "9", "--user", "bob"], input=script, text=True, capture_output=True,
        env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("bot [base]: ") == 2
    assert "started a new conversation" in done.stdout
    assert "Exchanges 2, rated 2" in done.stdout  # server 55's own numbers

    rated = sorted(await store.tenant(55).exchanges.rated(),
                   key=lambda r: r.exchange.created_at)
    assert [(r.exchange.tenant, r.exchange.channel_id) for r in rated] == [(55, 9), (55, 9)]
    assert {r.exchange.user_hash for r in rated} == {store.user_hash("bob")}
    assert rated[1].exchange.context == []  # /new: the first question is not its context
    assert await store.tenant(TENANT).exchanges.rated() == []  # nothing in the home server


def test_run_without_a_token_explains_and_exits_2(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "DISCORD_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "bot", "run"], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(REPO)}, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "DISCORD_TOKEN is not set" in done.stderr and "Traceback" not in done.stderr


async def test_the_console_swaps_in_a_promoted_adapter_while_chatting(fast, store, tmp_path,
                                                                      tiny_model_dir, own):
    """run_console follows the registry: a trainer's promotion changes the next reply's adapter."""
    from adapters_util import make_adapter_bytes

    from bot.core.store import AdapterRecord

    console = PipedConsole(fast)
    console.say("hello")
    await console.wait_for("bot [base]: ")
    await asyncio.sleep(0.2)  # the follower subscribed before the first line was read
    record = await own.registry.save(AdapterRecord(base_model=str(tiny_model_dir)),
                                      make_adapter_bytes(tiny_model_dir, fast))
    await own.registry.activate(record.version)
    await console.wait_for(f"[adapter activated: now serving {record.version}]")
    console.say("hello again")

    assert await console.end() == 0
    assert f"bot [{record.version}]: " in console.out.getvalue()


def test_the_console_path_does_not_import_discord():
    code = ("import sys, bot.frontends.console, bot.service.conversation, bot.service.actions; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'discord'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_adapter_status_shows_a_trainer_record_without_its_loss_curves(console, store,
                                                                            tiny_model_dir, own):
    from bot.core.store import AdapterRecord

    record = await own.registry.save(AdapterRecord(
        base_model=str(tiny_model_dir), parent="base",
        hyperparameters={"learning_rate": 0.005, "batch_size": 4,
                         "lora_targets": ["c_attn", "c_proj"]},
        metrics={"val_loss": {"base": 6.0659, "active": 6.0659, "candidate": 4.392},
                 "train_loss_curve": [5.0 - i / 100 for i in range(100)],
                 "val_loss_curve": [4.9, 4.6, 4.5, 4.45, 4.4, 4.39]},
        data={"train": 31, "validation": 8}), b"blob")
    # pointer only: no swap needed
    await raw_redis(store).set(store.keys("g", TENANT, "ad", "active"), record.version)
    status = await console.handle_line("/adapter status")
    assert f"Active adapter: {record.version}" in status
    assert "val_loss (base 6.066, active 6.066, candidate 4.392)" in status
    assert "learning_rate 0.005, batch_size 4, lora_targets ['c_attn', 'c_proj']" in status
    assert "train_loss_curve" not in status and "val_loss_curve" not in status
    assert len(status) < 2000


# --- replies shown as they are decoded ----------------------------------------------------------

async def test_the_console_writes_each_piece_as_it_arrives(fake_runtime, store):
    written: list[str] = []
    seen_before: list[int] = []  # how many writes were made when each piece was decoded
    fake_runtime.generator.script(["  ", *words(5)],
                                  before_piece=lambda number: seen_before.append(len(written)))
    console = Console(fake_runtime, write=written.append)

    assert await console.handle_line("tell me something") == ""

    # No head before the first words; then one write per piece, before the next is decoded.
    assert seen_before == [0, 0, 1, 2, 3, 4]
    assert written == ["bot [base]: word0", " word1", " word2", " word3", " word4", "\n"]
    stored = await store.exchanges.get(console.last.id)
    assert stored.reply == "word0 word1 word2 word3 word4" == "".join(written[:-1])[12:]
    assert console.turns[-1] == Turn("bot", stored.reply)


async def test_a_console_reply_cut_part_way_ends_with_a_note_and_keeps_nothing(
        fake_runtime, store):
    written: list[str] = []
    fake_runtime.generator.script(words(5), fail_after=2)
    console = Console(fake_runtime, write=written.append)

    assert await console.handle_line("tell me something") == ""

    assert "".join(written) == f"bot [base]: word0 word1 {CUT_NOTES['failed']}\n"
    assert console.last is None and console.turns == []
    assert await exchange_count(store) == 0
    # Without a writer the console answers with the same words in one line.
    assert await Console(fake_runtime).handle_line("again") == (
        f"bot [base]: word0 word1 {CUT_NOTES['failed']}")
    assert await exchange_count(store) == 0


async def test_a_console_reply_refused_before_any_text_is_the_usual_apology(
        fake_runtime):
    written: list[str] = []
    fake_runtime.generator.script(words(5), fail_after=0, error=EngineBusy("full"))
    console = Console(fake_runtime, write=written.append)

    assert await console.handle_line("hello?") == f"bot: {BUSY_REPLY}"
    assert written == []
