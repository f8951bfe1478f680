"""Generated token ids -> pieces of the reply, as they come, never splitting a character.

GPT-2's byte-level BPE can cut a character (most Chinese ones are three UTF-8 bytes) between two
tokens, and `tokenizer.decode` of such a cut gives U+FFFD. Here the bytes of each token go
through an incremental UTF-8 decoder instead: an incomplete sequence waits for the next token,
one that ends the reply unfinished (or that no token can complete) is dropped.

The pieces also stop where the reply will end (`dialogue.settled_reply`, the cut of
`dialogue.extract_reply`): text that may still become a turn marker is held back until it is
clearly not one, so the joined pieces are exactly the final reply text.
"""

from __future__ import annotations

import codecs

from bot.core import dialogue


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte (the tokens' spelling) -> that byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


class TokenBytes:
    """Token id -> its bytes, cached (the vocabulary is fixed)."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._alphabet = _byte_level_alphabet()
        self._cache: dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        found = self._cache.get(token_id)
        if found is None:
            token = self._tokenizer.convert_ids_to_tokens(token_id)
            try:
                found = bytes(self._alphabet[char] for char in token)
            except (KeyError, TypeError):  # not a byte-level token: its text is all we have
                found = self._tokenizer.decode([token_id]).replace("\ufffd", "").encode()
            self._cache[token_id] = found
        return found


class ReplyDecoder:
    """One reply's decoding state: `feed` a token, get the new piece of the reply ("" if none
    is settled yet); `finish` gives the last piece. `done` turns true once the reply has ended
    (a marker or end-of-text was written), so generation can stop there."""

    def __init__(self, token_bytes: TokenBytes, eos_token: str | None):
        self._token_bytes = token_bytes
        self._eos = eos_token
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self.generated = ""  # the text of the tokens so far (whole characters only)
        self.sent = ""  # the pieces handed out, joined
        self.done = False

    def feed(self, token_id: int) -> str:
        if self.done:
            return ""
        more = self._utf8.decode(self._token_bytes(token_id))
        if not more:
            return ""
        self.generated += more
        settled, self.done = dialogue.settled_reply(self.generated, self._eos)
        return self._advance(settled)

    def finish(self) -> str:
        """The rest of the reply; afterwards `sent` is exactly the final reply text."""
        self.generated += self._utf8.decode(b"", final=True)  # drops a dangling byte sequence
        return self._advance(dialogue.extract_reply(self.generated, self._eos))

    @property
    def text(self) -> str:
        return dialogue.extract_reply(self.generated, self._eos)

    def _advance(self, settled: str) -> str:
        if not settled.startswith(self.sent):
            # Only the fallback reply can do this (nothing was sent then): a guard, not a path.
            raise AssertionError(f"reply {settled!r} does not continue {self.sent!r}")
        piece = settled[len(self.sent):]
        self.sent = settled
        return piece


def reply_text(token_ids, token_bytes: TokenBytes, eos_token: str | None) -> str:
    """The reply a user would be shown for generated `token_ids`, decoded as the stream decodes
    it (no U+FFFD, cut where the reply ends): for code that generates outside the engine."""
    decoder = ReplyDecoder(token_bytes, eos_token)
    for token_id in token_ids:
        decoder.feed(token_id)
        if decoder.done:
            break
    decoder.finish()
    return decoder.sent
