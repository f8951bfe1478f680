"""Text as it comes in from a person or a file, made safe for the rest of the system.

`clean_text` turns what cannot be encoded as UTF-8 (lone surrogates, undecodable bytes a
terminal passed through) into U+FFFD, so the tokenizer, pydantic and Redis only ever see valid
text. `clip` bounds one message (MAX_MESSAGE_CHARS) before anything tokenises or stores it.
`strip_controls` removes C0 and C1 control characters but newline and tab (a model's ESC, BEL
or XOFF would drive a terminal; nothing shows them usefully), from model output and taught
replies before they are shown or stored. `invisible_characters` finds format and control
characters that change how text looks
without being seen (U+202E RIGHT-TO-LEFT OVERRIDE, zero-width spaces, ...).
"""

from __future__ import annotations

import unicodedata

REPLACEMENT = "\ufffd"
CLIPPED = "…"
# Joiners that scripts (Persian, Indic) and emoji sequences need: invisible but not deceptive.
_ALLOWED_FORMAT = {"\u200c", "\u200d"}


def clean_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (valid text is returned as it is)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join(REPLACEMENT if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text


# C0 (U+0000-U+001F), DEL and C1 (U+0080-U+009F), less newline and tab: str.translate drops them.
_CONTROLS = dict.fromkeys(c for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]
                          if chr(c) not in "\n\t")


def strip_controls(text: str) -> str:
    """`text` without control characters, newlines and tabs kept."""
    return text.translate(_CONTROLS)


def clip(text: str, max_chars: int) -> str:
    """At most `max_chars` characters: a longer text keeps its end (where a message usually
    asks its question, as the prompt does), marked with a leading "…"."""
    if len(text) <= max_chars:
        return text
    return CLIPPED + text[len(text) - max_chars + 1:]


def invisible_characters(text: str) -> list[str]:
    """The distinct format (Cf) and control (Cc) characters in `text`, as U+XXXX names."""
    found = []
    for ch in text:
        if ch in _ALLOWED_FORMAT:
            continue
        if unicodedata.category(ch) in ("Cf", "Cc"):
            name = f"U+{ord(ch):04X}"
            if name not in found:
                found.append(name)
    return found


def snippet(text: str, limit: int = 90) -> str:
    """`text` on one line, its head kept up to `limit` characters (for a line that quotes it)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"
