"""What a `/style` prefix may be: it goes into every prompt of its place, in serving and
training, so it must not forge a turn, hide characters or crowd out the conversation."""

from __future__ import annotations

from bot.core.dialogue import BOT_MARK, USER_MARK, neutralise
from bot.core.text import clean_text, invisible_characters

SCOPE_WORDS = ("channel", "server", "guild")


class StyleRejected(ValueError):
    """A style prefix that may not be used; the message says why."""


def validate_style(prefix: str, max_chars: int, eos_token: str | None = None) -> str:
    """The cleaned prefix, or StyleRejected when it is empty, a bare scope word, too long, or
    holds role markers or invisible format characters."""
    prefix = clean_text(prefix).strip()
    if not prefix:
        raise StyleRejected("a style prefix needs some text")
    if prefix.lower() in SCOPE_WORDS:
        raise StyleRejected(f"{prefix!r} is a scope, not a style: give the prefix text, e.g. "
                            "'Answer as a polite support agent:'")
    hidden = invisible_characters(prefix)
    if hidden:
        raise StyleRejected("a style prefix may not contain invisible format or control "
                            f"characters ({', '.join(hidden[:5])})")
    if len(prefix) > max_chars:
        raise StyleRejected(f"a style prefix is at most {max_chars} characters "
                            f"(this one has {len(prefix)})")
    # neutralise() rewrites exactly what could forge a turn; any change means a marker was there.
    if neutralise(prefix, eos_token) != prefix:
        raise StyleRejected(f"a style prefix may not contain role markers such as {USER_MARK} "
                            f"or {BOT_MARK}, nor the end-of-text token")
    return prefix
