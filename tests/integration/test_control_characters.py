"""Control characters from the model or a moderator never reach a terminal, Discord or the
store: C0 and C1 controls go at the edge (bot/core/text.py strip_controls), newlines and tabs
stay."""

from __future__ import annotations

import pytest
from stream_util import RecordingSink

from bot.core.dialogue import Turn
from bot.core.text import strip_controls
from bot.service.drafts import FAILED_REPLY, Failure

NASTY = "\x1b[2J\x07\x13\x00\x7f\x85\x9b"  # clear screen, bell, XOFF, NUL, DEL, NEL, CSI
CONTROLS = {ch for ch in NASTY if not ch.isprintable()}


def test_strip_controls_keeps_newlines_tabs_and_every_other_character():
    assert strip_controls(f"a{NASTY}b\n\tc\r") == "a[2Jb\n\tc"
    kept = "é 中文 \u200d 😀 \u00a0"
    assert strip_controls(kept) == kept


async def test_model_output_loses_its_control_characters_shown_and_stored(fake_runtime, store):
    fake_runtime.generator.script([" Hello\x1b[31m", " red\x07", "\x13\n\tdone"])
    sink = RecordingSink(message_ids=[41])

    exchange = await fake_runtime.conversation.reply(
        [Turn("user", "hi")], sink, source="console", user_id=5, guild_id=7, channel_id=8)

    shown = [call[1] for call in sink.calls if call[0] in ("show", "finish")]
    assert shown[-1] == "Hello[31m red\n\tdone"
    assert not any(set(text) & CONTROLS for text in shown)
    assert (await store.exchanges.for_message(41)).reply == exchange.reply == shown[-1]


async def test_a_reply_of_nothing_but_controls_is_a_failure(fake_runtime):
    fake_runtime.generator.script(["\x1b", "\x07\x13"])
    stream = await fake_runtime.conversation.stream_draft([Turn("user", "hi")], guild_id=None,
                                                          channel_id=1)
    assert [piece async for piece in stream] == []
    assert stream.draft is None and stream.failure == Failure("failed", FAILED_REPLY)


@pytest.mark.parametrize("taught", ["Try \x1b[1mturning it off\x1b[0m\x07 and on.",
                                    "Try turning it off\x9b and on.\x13"])
async def test_a_taught_reply_loses_its_control_characters(fake_runtime, store, taught):
    sink = RecordingSink(message_ids=[51])
    exchange = await fake_runtime.conversation.reply(
        [Turn("user", "it is broken")], sink, source="console", user_id=5, guild_id=7,
        channel_id=8)
    answer = await fake_runtime.actions.teach(7, exchange.id, 99, taught)
    assert answer.ok, answer
    [rated] = await store.tenant(7).exchanges.rated()
    assert [c.text for c in rated.corrections] == [strip_controls(taught)]
    assert not set(rated.corrections[0].text) & CONTROLS
