"""Hostile or broken input gets a clear answer, never a traceback: text that is not valid
Unicode is cleaned at the edge, invisible format characters and bare scope words are refused
in a style, and one huge message is stored once, clipped, not copied into every context."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from paths import REPO
from store_util import corrections, raw_redis
from subprocess_env import settings_env

from bot.core.text import CLIPPED
from bot.frontends.console import CONSOLE_CHANNEL, CONSOLE_USER, Console
from bot.service.style_prefix import StyleRejected, validate_style

LONE = "\ud800"  # a lone surrogate: what a terminal's undecodable byte can become


@pytest.fixture
async def console(runtime):
    return Console(runtime)


async def test_lone_surrogates_are_replaced_before_anything_sees_them(console, store):
    answer = await console.handle_line(f"hello {LONE} there \udcff")
    assert answer.startswith("bot [base]: ")
    assert console.last.user_message == "hello \ufffd there \ufffd"

    assert "stored" in await console.handle_line(f"/teach a better {LONE} reply")
    [correction] = await corrections(store, console.last.id)
    assert correction.text == "a better \ufffd reply"

    assert "set" in await console.handle_line(f"/style set Be {LONE} kind:")
    assert (await store.styles.in_force(None, CONSOLE_CHANNEL)).prefix == "Be \ufffd kind:"


async def test_undecodable_bytes_piped_into_the_console_are_answered(fast, store, tmp_path):
    # Greedy: a sampled reply of the random tiny model was, now and then, nothing but control
    # characters, which are taken out: the console apologised instead (one full run in several).
    env = settings_env(fast, MAX_NEW_TOKENS=4, TEMPERATURE=0, PYTHONPATH=REPO)
    script = b"hello \xff\xfe there\n/style set caf\xe9 voice:\n/style show\n"
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot", "console"], input=script,
        capture_output=True, env=env, cwd=tmp_path, timeout=120)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, err
    assert "Traceback" not in out + err
    assert out.startswith("bot [base]: "), out
    assert "Channel style (in force): caf\ufffd voice:" in out
    user_key = store.keys("ex", "user", store.user_hash(CONSOLE_USER))
    [exchange_id] = await raw_redis(store).zrange(user_key, 0, -1)
    stored = await store.exchanges.get(exchange_id.decode())
    assert stored.user_message == "hello \ufffd\ufffd there"


@pytest.mark.parametrize("prefix", ["channel", "Server", " guild "])
def test_a_bare_scope_word_is_not_a_style(prefix):
    with pytest.raises(StyleRejected, match="is a scope, not a style"):
        validate_style(prefix, max_chars=200)


@pytest.mark.parametrize("hidden", ["\u202e", "\u200b", "\u2066", "\ufeff", "\x07", "\n"])
def test_invisible_format_and_control_characters_are_refused_in_a_style(hidden):
    with pytest.raises(StyleRejected, match=f"U\\+{ord(hidden):04X}"):
        validate_style(f"Answer {hidden}politely:", max_chars=200)


def test_joiners_that_scripts_and_emoji_need_are_kept():
    family = "\N{MAN}\u200d\N{WOMAN}\u200d\N{GIRL}"
    assert validate_style(f"Answer as a family {family}:", max_chars=200).endswith(f"{family}:")


async def test_style_set_channel_alone_sets_nothing(console, store, runtime):
    assert (await console.handle_line("/style set channel")).startswith("usage: /style set")
    assert (await console.handle_line("/style set server")).startswith("usage: /style set")
    assert await store.styles.in_force(None, CONSOLE_CHANNEL) is None
    # The same words typed as the prefix of Discord's /style set are refused too.
    answer = await runtime.actions.set_style("channel", 5, "channel", 1)
    assert not answer.ok and "scope" in answer.text
    answer = await runtime.actions.set_style("channel", 5, "Be kind \u202e", 1)
    assert not answer.ok and "U+202E" in answer.text
    assert await store.styles.in_force(None, 5) is None


async def test_a_huge_line_is_stored_once_and_clipped(console, store, fast):
    limit = fast.max_message_chars
    huge = "word " * 200_000  # a million characters
    assert (await console.handle_line(huge)).startswith("bot [base]: ")
    first = console.last
    assert len(first.user_message) == limit and first.user_message.startswith(CLIPPED)
    await console.handle_line("and a short one")
    second = console.last
    assert [len(t.text) for t in second.context] == [limit, len(first.reply)]
    raw = await raw_redis(store).get(store.keys("ex", second.id))
    assert len(raw) < 2 * limit


async def test_a_taught_reply_over_the_limit_is_refused(console, fast):
    await console.handle_line("hello")
    answer = await console.handle_line("/teach " + "x" * (fast.max_message_chars + 1))
    assert "at most" in answer and str(fast.max_message_chars) in answer
