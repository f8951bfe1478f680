"""Streamed reply pieces: whole characters only, and exactly the final reply once joined."""

from __future__ import annotations

import random

import pytest

from bot.core.dialogue import FALLBACK_REPLY, extract_reply, settled_reply
from bot.core.reply_decoder import ReplyDecoder, TokenBytes, reply_text

EOS = "<|endoftext|>"


def decode_stream(tokenizer, ids: list[int]) -> tuple[list[str], ReplyDecoder]:
    decoder = ReplyDecoder(TokenBytes(tokenizer), tokenizer.eos_token)
    pieces = [decoder.feed(i) for i in ids]
    pieces.append(decoder.finish())
    return [p for p in pieces if p], decoder


def test_chinese_characters_cut_between_tokens_never_give_a_replacement_character(tokenizer):
    text = "你好，世界！我们今天谈谈天气怎么样"
    ids = tokenizer.encode(" " + text, add_special_tokens=False)
    # The test means something only if some token really holds part of a character.
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids), "no token cuts a character"
    pieces, decoder = decode_stream(tokenizer, ids)
    assert len(pieces) > 3
    assert not any("\ufffd" in p for p in pieces)
    assert "".join(pieces) == decoder.sent == text


def test_a_character_left_unfinished_at_the_end_is_dropped(tokenizer):
    text = "天气世界"
    ids = tokenizer.encode(" " + text, add_special_tokens=False)
    cut = next(n for n in range(len(ids), 0, -1) if "\ufffd" in tokenizer.decode(ids[:n]))
    assert "\ufffd" in tokenizer.decode(ids[:cut])  # what `decode` would have served
    pieces, decoder = decode_stream(tokenizer, ids[:cut])
    joined = "".join(pieces)
    assert "\ufffd" not in joined and text.startswith(joined) and len(joined) < len(text)


def test_pieces_stop_where_the_reply_ends_even_when_a_marker_comes_in_bits(tokenizer):
    ids = tokenizer.encode(" fine thanks < us", add_special_tokens=False)
    ids += tokenizer.encode("er> and more", add_special_tokens=False)
    pieces, decoder = decode_stream(tokenizer, ids)
    assert "".join(pieces) == "fine thanks" and decoder.done


def test_an_empty_reply_streams_the_fallback(tokenizer):
    pieces, _ = decode_stream(tokenizer, tokenizer.encode("   <bot> hi", add_special_tokens=False))
    assert pieces == [FALLBACK_REPLY]


class CharTokens:
    """A stand-in tokenizer whose tokens are single characters."""

    eos_token = EOS

    def convert_ids_to_tokens(self, token_id):
        return None  # not byte-level: TokenBytes falls back to decode

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


@pytest.mark.parametrize("seed", range(300))
def test_settled_text_only_grows_and_ends_as_the_reply(seed):
    rng = random.Random(seed)
    parts = ["hi", " ", "  ", "<", ">", "/", "u", "user", "bot", "B", "ot", "<|", "endoftext",
             "|>", "x", "\n", "好", "<bot>", "< USER >", "<|endoftext|>"]
    generated = "".join(rng.choice(parts) for _ in range(rng.randint(0, 14)))
    decoder = ReplyDecoder(TokenBytes(CharTokens()), EOS)
    pieces, last = [], ""
    for char in generated:
        pieces.append(decoder.feed(ord(char)))
        settled, _ = settled_reply(decoder.generated, EOS)
        assert settled.startswith(last)
        last = settled
    pieces.append(decoder.finish())
    assert "".join(pieces) == extract_reply(generated, EOS)


def test_reply_text_of_a_whole_generation_matches_the_stream_and_breaks_no_character(tokenizer):
    # What the trainer's gate decodes: a generated row cut mid-character, then end-of-text and
    # the padding `generate` adds after it.
    text = "天气世界"
    ids = tokenizer.encode(" " + text, add_special_tokens=False)
    cut = next(n for n in range(len(ids), 0, -1) if "\ufffd" in tokenizer.decode(ids[:n]))
    row = ids[:cut] + [tokenizer.eos_token_id] * 3
    shown = reply_text(row, TokenBytes(tokenizer), tokenizer.eos_token)
    pieces, _ = decode_stream(tokenizer, row)
    assert shown == "".join(pieces)
    assert "\ufffd" not in shown and text.startswith(shown) and shown
