"""Replies shown while they are decoded: the first message once there are words, edits at most
once per EDIT_INTERVAL_S, the last writes carrying the stored reply and only then the 👍/👎,
long replies continued in new messages, a cut reply ended with a note and kept nowhere.

Most tests drive the bot on a FakeGenerator (tests/fake_generator.py, a double of our own
generation boundary) with scripted pieces and a clock they move per piece; the last one runs
the real engine on the tiny model with the real clock.
"""

from __future__ import annotations

import time

import discord.ext.test as dpytest
import pytest
from discord_helpers import (
    FakeClock,
    delete_messages,
    member,
    reply_message,
    running_bot,
    sent_messages,
)
from store_util import exchange_count
from stream_util import words

from bot.core.generation import EngineBusy, GenerationFailed
from bot.frontends.discord import channel_writes
from bot.frontends.discord.cogs.replies import (
    EDIT_INTERVAL_S,
    MESSAGE_LIMIT,
    THUMBS_DOWN,
    THUMBS_UP,
)
from bot.service.drafts import BUSY_REPLY, CUT_NOTES, cut_off


@pytest.fixture
def bot(scripted_bot):
    return scripted_bot


def script(bot, pieces: list[str], **options) -> list:
    """Every next reply of `bot` decodes `pieces`; the streams it makes, oldest first."""
    bot.runtime.generator.script(pieces, **options)
    return bot.runtime.generator.streams


def mention(bot) -> str:
    return f"<@{bot.user.id}>"


def shown(bot, message) -> str:
    """What the message shows now (the client's copy, kept up to date by MESSAGE_UPDATE)."""
    return bot._connection._get_message(message.id).content


def paced(monkeypatch) -> FakeClock:
    """The clock that paces a streamed reply's edits and its channel's write budget
    (channel_writes.py reads `monotonic` and waits with `sleep`), which the test moves as each
    piece is decoded."""
    clock = FakeClock()
    monkeypatch.setattr(channel_writes, "monotonic", clock)
    monkeypatch.setattr(channel_writes, "sleep", clock.sleep)
    return clock


def after_last_text_write(bot) -> list[tuple]:
    """The bot's writes after its last send or edit (and none of them before it)."""
    kinds = [kind for kind, _, _ in bot.writes]
    last_text = max(i for i, kind in enumerate(kinds) if kind in ("send", "edit"))
    assert "react" not in kinds[:last_text], bot.writes
    return bot.writes[last_text + 1:]


async def test_edits_are_throttled_and_the_last_one_carries_the_stored_reply(bot, store,
                                                                           monkeypatch):
    clock = paced(monkeypatch)
    pieces = ["", " ", "\n", *words(40)]
    script(bot, pieces, before_piece=lambda _: clock.advance(0.25))

    await dpytest.message(f"{mention(bot)} tell me a long story", member=member("alice"))

    [reply] = await sent_messages()
    exchange = await store.exchanges.for_message(reply.id)
    # The first message waits for words (not the blanks before them).
    assert bot.writes[0] == ("send", reply.id, "word0")
    # 43 pieces over 10.75 s: at most one edit per interval, plus the final one.
    elapsed = clock.now
    assert 5 <= len(bot.edits) <= elapsed // EDIT_INTERVAL_S + 1
    assert {message_id for message_id, _ in bot.edits} == {reply.id}
    assert bot.edits[-1][1] == shown(bot, reply) == exchange.reply == "".join(pieces).strip()
    # Ratings come after the final edit, and rate the stored exchange.
    assert after_last_text_write(bot) == [("react", reply.id, THUMBS_UP),
                                          ("react", reply.id, THUMBS_DOWN)]
    await dpytest.add_reaction(member("mod"), reply, THUMBS_UP)
    assert await store.exchanges.ratings(exchange.id) == {store.user_hash(member("mod").id): 1}
    assert bot.typing_channels == [reply.channel.id]


async def test_a_long_streamed_reply_continues_in_new_messages(bot, store, channel,
                                                               monkeypatch):
    clock = paced(monkeypatch)
    pieces = words(500, "streamed")  # 5,889 characters
    script(bot, pieces, before_piece=lambda _: clock.advance(0.1))

    await dpytest.message(f"{mention(bot)} tell me everything", member=member("alice"))

    messages = await sent_messages()
    contents = [shown(bot, m) for m in messages]
    exchange = await store.exchanges.for_message(messages[0].id)
    assert len(messages) == 3 and bot.refusals == []
    assert all(len(text) <= MESSAGE_LIMIT for text in contents)
    assert " ".join(contents) == exchange.reply == "".join(pieces).strip()
    assert all(" " not in text[-1:] and text.split()[-1].startswith("streamed")
               for text in contents)  # split between words
    assert exchange.message_ids == [m.id for m in messages]
    for message in messages:
        assert (await store.exchanges.for_message(message.id)).id == exchange.id
    # Throttled: sends and edits while decoding at most one per interval, plus final writes.
    text_writes = [w for w in bot.writes if w[0] in ("send", "edit")]
    assert len(text_writes) <= clock.now // EDIT_INTERVAL_S + len(messages)
    assert sorted(after_last_text_write(bot)) == sorted(
        ("react", m.id, emoji) for m in messages for emoji in (THUMBS_UP, THUMBS_DOWN))

    # A reply to its last message carries that message's final text as the bot's turn.
    reply_message("and then?", member("alice"), channel, replied_to=messages[-1])
    follow_up = (await sent_messages())[0]  # scripted: the same long reply again
    context = (await store.exchanges.for_message(follow_up.id)).context
    assert [(t.role, t.text) for t in context][-1] == ("bot", contents[-1])

    # Deleting any message of it takes the reply out of the training data, as before.
    await delete_messages(messages[1])
    assert (await store.exchanges.get(exchange.id)).reply_deleted


async def test_a_stream_cut_part_way_ends_with_a_note_and_keeps_nothing(bot, store,
                                                                        monkeypatch):
    clock = paced(monkeypatch)
    script(bot, words(10), fail_after=6,
           error=GenerationFailed("the model call failed"),
           before_piece=lambda _: clock.advance(0.4))

    await dpytest.message(f"{mention(bot)} hello?", member=member("alice"))

    [reply] = await sent_messages()
    assert shown(bot, reply) == cut_off("".join(words(6)), "failed")
    assert shown(bot, reply).endswith(CUT_NOTES["failed"])
    assert bot.own_reactions == []
    assert await store.exchanges.for_message(reply.id) is None
    assert await exchange_count(store, reply.guild.id) == 0


async def test_a_stream_refused_before_any_words_is_the_usual_apology(bot, store,
                                                                      monkeypatch):
    script(bot, words(3), fail_after=0, error=EngineBusy("full"))

    await dpytest.message(f"{mention(bot)} hello?", member=member("alice"))

    [reply] = await sent_messages()
    assert reply.content == BUSY_REPLY and bot.edits == [] and bot.own_reactions == []
    assert await exchange_count(store, reply.guild.id) == 0


async def test_a_reply_whose_message_is_deleted_while_streaming_stops_and_keeps_nothing(
        bot, store, channel, monkeypatch):
    clock = paced(monkeypatch)

    async def step(number: int) -> None:
        clock.advance(0.5)
        if number == 4:  # someone deletes the bot's message while it is being written
            sent = bot.writes[0][1]
            await delete_messages(bot._connection._get_message(sent), wait=False)

    streams = script(bot, words(12), before_piece=step)

    await dpytest.message(f"{mention(bot)} hello?", member=member("alice"))
    await sent_messages()

    assert [(what, status) for what, status, _ in bot.refusals] == [("edit", 404)]
    assert streams[0].closed and streams[0].handed_out < 12  # the engine was told to stop
    assert bot.own_reactions == [] and await exchange_count(store, channel.guild.id) == 0


async def test_the_real_engine_streams_through_the_same_path(fast, store, engine):
    """End to end on the tiny model with the real clock: whatever pieces the engine gives, the
    edits stay within the pace, the final text is the stored reply, the ratings come last."""
    longer = fast.model_copy(update={"max_new_tokens": 48})
    async with running_bot(longer, store, engine) as bot:
        started = time.monotonic()
        await dpytest.message(f"{mention(bot)} tell me about the sea", member=member("alice"))
        messages = await sent_messages()
        elapsed = time.monotonic() - started

        exchange = await store.exchanges.for_message(messages[0].id)
        assert exchange.reply_tokens >= 1 and exchange.adapter_version == "base"
        assert " ".join(shown(bot, m) for m in messages) == exchange.reply
        assert len(bot.edits) <= elapsed // EDIT_INTERVAL_S + 1
        assert after_last_text_write(bot)[-2:] == [("react", messages[-1].id, THUMBS_UP),
                                                   ("react", messages[-1].id, THUMBS_DOWN)]


async def test_a_piece_deleted_while_the_rest_is_written_keeps_the_reply_out_of_training(
        bot, store, channel, monkeypatch):
    clock = paced(monkeypatch)

    async def step(number: int) -> None:
        clock.advance(0.3)
        sends = [message_id for kind, message_id, _ in bot.writes if kind == "send"]
        if number == 300 and len(sends) == 2:  # the first message is whole, the second grows
            await delete_messages(bot._connection._get_message(sends[0]), wait=False)

    script(bot, words(400, "streamed"), before_piece=step)
    kept = []
    keep = bot.conversation.keep

    async def keep_and_note(*args, **kwargs):
        kept.append(await keep(*args, **kwargs))
        return kept[-1]

    monkeypatch.setattr(bot.conversation, "keep", keep_and_note)

    await dpytest.message(f"{mention(bot)} tell me everything", member=member("alice"))
    messages = await sent_messages()

    assert len(messages) == 3 and bot.refusals == []
    exchange = await store.exchanges.get(kept[0].id)
    assert exchange.message_ids == [m.id for m in messages]
    # As if the piece had been deleted after the reply was stored: out of the training data,
    # and none of its pieces can be rated any more.
    assert exchange.reply_deleted
    for message in messages:
        assert await store.exchanges.for_message(message.id) is None


async def test_a_reply_that_ends_shorter_than_it_was_shown_keeps_only_what_holds_it(
        bot, store, monkeypatch):
    clock = paced(monkeypatch)
    script(bot, words(300), reply="word0 word1",
           before_piece=lambda _: clock.advance(0.5))

    await dpytest.message(f"{mention(bot)} tell me", member=member("alice"))
    first, second = await sent_messages()

    assert shown(bot, first) == "word0 word1"
    assert ("delete", second.id) in [(kind, message_id) for kind, message_id, _ in bot.writes]
    exchange = await store.exchanges.for_message(first.id)
    assert exchange.reply == "word0 word1" and exchange.message_ids == [first.id]
    assert after_last_text_write(bot)[-2:] == [("react", first.id, THUMBS_UP),
                                               ("react", first.id, THUMBS_DOWN)]
