"""How replies reach Discord and what is answered: a long reply is split without breaking a
``` block and every piece can be rated and taught; DM replies carry no rating buttons;
skin-toned thumbs count; system, empty and attachment-only messages are not chat."""

from __future__ import annotations

import re

import discord.ext.test as dpytest
from discord_helpers import (
    RecordingAdapter,
    attachment,
    dm_reply,
    interaction_payload,
    invoke,
    member,
    message_menu_data,
    sent_messages,
    user_message,
)
from store_util import exchange_count

from bot.frontends.discord.cogs.replies import THUMBS_DOWN, THUMBS_UP, open_fence, split_message

SKIN_TONED_UP = "\N{THUMBS UP SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-4}"
SKIN_TONED_DOWN = "\N{THUMBS DOWN SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-6}"


def reactions_on(bot, message) -> list[str]:
    return [emoji for message_id, emoji in bot.own_reactions if message_id == message.id]


def code_reply(lines: int = 120) -> str:
    code = "\n".join(f"    value_{n} = compute({n}, 'some text here')" for n in range(lines))
    return f"Here is the script:\n```python\n{code}\n```\nRun it with python."


# --- splitting --------------------------------------------------------------------------------

def test_a_long_code_block_is_closed_and_reopened_across_pieces():
    text = code_reply()
    assert len(text) > 4000

    pieces = split_message(text)

    assert len(pieces) >= 3 and all(len(p) <= 2000 for p in pieces)
    for piece in pieces:
        assert open_fence(piece) is None, piece[-80:]  # every block it opens, it closes
    for piece in pieces[1:-1]:
        assert piece.startswith("```python\n") and piece.endswith("\n```")
    # Nothing lost: without the added fences the pieces give back every line of the text.
    joined = "\n".join(p.removeprefix("```python\n").removesuffix("\n```") for p in pieces)
    assert joined.splitlines() == text.splitlines()


def test_a_fence_is_never_cut_in_two_and_prose_splits_as_before():
    text = "x" * 1998 + "```" + "y" * 100  # a hard cut at 2,000 would split the ```
    pieces = split_message(text)
    assert pieces == ["x" * 1998, "```" + "y" * 100]
    prose = ("word " * 900).strip()
    assert " ".join(split_message(prose)) == prose
    assert [len(p) for p in split_message("z" * 4500)] == [2000, 2000, 500]


def test_a_hard_cut_never_splits_a_visible_character():
    accented = "e\u0301" * 1500  # é as a letter and its combining accent, no spaces
    thumbs = "x" + "\N{THUMBS UP SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-4}" * 1500
    family = "x" + "\N{MAN}\u200d\N{WOMAN}\u200d\N{GIRL}" * 700  # ZWJ sequences
    for text in (accented, thumbs, family):
        pieces = split_message(text)
        assert "".join(pieces) == text and all(len(p) <= 2000 for p in pieces)
        for piece in pieces[1:]:
            assert not piece.startswith(("\u0301", "\N{EMOJI MODIFIER FITZPATRICK TYPE-4}",
                                         "\u200d")), piece[:3]
        assert not any(p.endswith("\u200d") for p in pieces)
    assert [len(p) for p in split_message(accented)] == [2000, 1000]
    assert [len(p) for p in split_message(thumbs)] == [1999, 1002]


# --- every piece is one exchange --------------------------------------------------------------

async def test_every_piece_of_a_split_reply_can_be_rated_and_taught(scripted_bot, store,
                                                                   channel):
    bot = scripted_bot
    bot.runtime.generator.script([code_reply()])
    await dpytest.message(f"<@{bot.user.id}> write me a script", member=member("alice"))
    pieces = await sent_messages()
    assert len(pieces) >= 3 and bot.refusals == []

    exchange = await store.exchanges.for_message(pieces[0].id)
    assert exchange.message_ids == [p.id for p in pieces]
    assert exchange.reply == code_reply()
    for piece in pieces:
        assert reactions_on(bot, piece) == [THUMBS_UP, THUMBS_DOWN]
        assert (await store.exchanges.for_message(piece.id)).id == exchange.id

    await dpytest.add_reaction(member("mod"), pieces[-1], THUMBS_UP)
    assert await store.exchanges.ratings(exchange.id) == {store.user_hash(member("mod").id): 1}

    recorder = RecordingAdapter()
    menu = message_menu_data("Teach a better reply", pieces[1])
    await invoke(bot, interaction_payload(bot, member("mod"), channel, menu), recorder)
    [modal] = recorder.modals()
    assert exchange.id in modal["custom_id"]


# --- reactions --------------------------------------------------------------------------------

async def test_a_dm_reply_carries_no_rating_buttons(bot, store):
    reply = await dm_reply("alice")

    assert await store.exchanges.for_message(reply.id) is not None
    assert reactions_on(bot, reply) == []


async def test_skin_toned_thumbs_count(bot, store):
    await dpytest.message(f"<@{bot.user.id}> rate me", member=member("alice"))
    [reply] = await sent_messages()
    exchange = await store.exchanges.for_message(reply.id)
    mod = store.user_hash(member("mod").id)

    await dpytest.add_reaction(member("mod"), reply, SKIN_TONED_DOWN)
    assert await store.exchanges.ratings(exchange.id) == {mod: -1}
    await dpytest.add_reaction(member("mod"), reply, SKIN_TONED_UP)
    assert await store.exchanges.ratings(exchange.id) == {mod: 1}
    await dpytest.remove_reaction(member("mod"), reply, SKIN_TONED_UP)
    assert await store.exchanges.ratings(exchange.id) == {}


# --- what is chat -----------------------------------------------------------------------------

async def test_system_empty_and_attachment_only_messages_are_not_answered(bot, store, channel):
    await store.chat.set(channel.id, True)
    alice = member("alice")

    user_message("a new thread about printers", alice, channel, kind=18)  # thread created
    user_message("", alice, channel, kind=7)  # someone joined
    user_message("", alice, channel, kind=6)  # a message was pinned
    user_message("", alice, channel, attachments=[attachment()])  # a photo, no words
    user_message(f"<@{bot.user.id}>", alice, channel)  # a bare mention

    assert await sent_messages() == []
    assert await exchange_count(store, channel.guild.id) == 0


async def test_system_messages_are_no_context(bot, store, channel):
    alice = member("alice")
    user_message("printer thread", alice, channel, kind=18)
    await dpytest.message("the printer is jammed", member=member("bob"))
    await dpytest.message(f"<@{bot.user.id}> can you help?", member=alice)

    [reply] = await sent_messages()

    exchange = await store.exchanges.for_message(reply.id)
    assert [t.text for t in exchange.context] == ["the printer is jammed"]
    assert not any(re.search("printer thread", t.text) for t in exchange.context)
