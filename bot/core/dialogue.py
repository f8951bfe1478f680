"""The one prompt format, shared by serving and training so the model learns what it is served.

    {style prefix}            <- only when a style is in force, on its own line
    <user> oldest message
    <bot> its reply
    <user> newest message
    <bot>                     <- the model writes the bot's turn from here

A training target is " " + reply + end-of-text, appended to the same prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

USER_MARK = "<user>"
BOT_MARK = "<bot>"
DEFAULT_EOS = "<|endoftext|>"
FALLBACK_REPLY = "Sorry, I have nothing useful to say to that yet."

# Anything that reads like a role marker, however it is spaced or cased, e.g. "< BOT >".
_MARKER_LIKE = re.compile(r"<\s*/?\s*(user|bot)\s*>", re.IGNORECASE)


class Tokenizer(Protocol):
    eos_token: str | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class PromptTooLong(ValueError):
    """The style prefix alone leaves no room for the user's message."""


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "bot"]
    text: str


def neutralise(text: str, eos_token: str | None = DEFAULT_EOS) -> str:
    """Defuse role markers and the end-of-text token so typed text cannot forge a turn."""
    # Removing one token can join its neighbours into another ("<|endo<|endoftext|>ftext|>"),
    # so repeat until nothing is left to remove.
    tokens = {t for t in (eos_token, DEFAULT_EOS) if t}
    while any(t in text for t in tokens):
        for token in tokens:
            text = text.replace(token, "")
    return _MARKER_LIKE.sub(lambda m: f"[{m.group(1).lower()}]", text)


def render(turns: list[Turn], style: str | None) -> str:
    """The prompt text for already neutralised turns, ending with the bot marker."""
    head = f"{style.strip()}\n" if style and style.strip() else ""
    body = "".join(f"{USER_MARK if t.role == 'user' else BOT_MARK} {t.text.strip()}\n"
                   for t in turns)
    return f"{head}{body}{BOT_MARK}"


def _count(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def _keep_tail(tokenizer: Tokenizer, text: str, max_tokens: int) -> str:
    """The end of `text` in at most `max_tokens` tokens (a long message keeps its end)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text
    if max_tokens <= 0:
        return ""
    # A cut through a multi-byte character decodes to U+FFFD: drop that fragment.
    return tokenizer.decode(ids[-max_tokens:]).lstrip("\ufffd")


def build_prompt(turns: list[Turn], style: str | None, tokenizer: Tokenizer,
                 max_tokens: int) -> str:
    """The prompt for the bot's next turn, at most `max_tokens` tokens long.

    `turns` run oldest first and end with the user's newest message. The oldest turns go first
    when the prompt is too long; the style prefix and the newest message are never dropped,
    though a newest message longer than the budget keeps only its end.
    """
    if not turns or turns[-1].role != "user":
        raise ValueError("a dialogue must end with the user's message")
    eos = tokenizer.eos_token
    clean = [Turn(t.role, neutralise(t.text, eos)) for t in turns]
    style = neutralise(style, eos).strip() if style else None
    history, newest = clean[:-1], clean[-1]

    room = max_tokens - _count(tokenizer, render([Turn("user", "")], style))
    if room < 0:
        raise PromptTooLong(f"the style prefix leaves no room in {max_tokens} prompt tokens")
    # Re-encoding a decoded cut can differ by a token or two; shrink until it really fits.
    while True:
        newest_cut = Turn("user", _keep_tail(tokenizer, newest.text, room))
        if _count(tokenizer, render([newest_cut], style)) <= max_tokens or room == 0:
            break
        room -= 1

    kept: list[Turn] = []
    for turn in reversed(history):
        candidate = [turn, *kept, newest_cut]
        if _count(tokenizer, render(candidate, style)) > max_tokens:
            break
        kept.insert(0, turn)
    return render([*kept, newest_cut], style)


def training_ids(turns: list[Turn], style: str | None, reply: str, tokenizer: Tokenizer,
                 max_tokens: int, eos_token_id: int) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids) of one training example, together at most `max_tokens`.

    The target is the reply as the model should write it after the prompt, ending with
    end-of-text; the prompt is built by `build_prompt`, exactly as it is served.
    """
    target = tokenizer.encode(" " + neutralise(reply, tokenizer.eos_token).strip(),
                              add_special_tokens=False)
    # Keep at least half of the room for the prompt so a long reply cannot crowd out its cause.
    target = target[: max(1, max_tokens // 2 - 1)] + [eos_token_id]
    prompt = build_prompt(turns, style, tokenizer, max_tokens - len(target))
    return tokenizer.encode(prompt, add_special_tokens=False), target


def _stops(eos_token: str | None) -> tuple[str, ...]:
    return (USER_MARK, BOT_MARK, eos_token or DEFAULT_EOS, DEFAULT_EOS)


def _first_stop(generated: str, eos_token: str | None) -> int | None:
    """Where the bot's turn ends in `generated` (the next marker or end-of-text), if it does."""
    cut = len(generated)
    for stop in _stops(eos_token):
        at = generated.find(stop)
        if at != -1:
            cut = min(cut, at)
    marker = _MARKER_LIKE.search(generated)  # also "< bot >" and other spellings of a marker
    if marker:
        cut = min(cut, marker.start())
    return cut if cut < len(generated) else None


def extract_reply(generated: str, eos_token: str | None = DEFAULT_EOS) -> str:
    """The bot's turn from generated text: up to the next marker or end-of-text, never empty."""
    cut = _first_stop(generated, eos_token)
    reply = generated[:cut].strip()
    return reply or FALLBACK_REPLY


# A text that more generated text could still turn into a marker: "<", "< us", "</bot  ".
_MARKER_START = re.compile(r"<\s*(?:/\s*)?(?:u(?:s(?:e(?:r\s*)?)?)?|b(?:o(?:t\s*)?)?)?",
                           re.IGNORECASE)


def settled_reply(generated: str, eos_token: str | None = DEFAULT_EOS) -> tuple[str, bool]:
    """(the start of the reply that no further generated text can change, whether the reply is
    complete): while the text ends in what may become a marker, that part is held back, and so
    is trailing whitespace, which `extract_reply` strips. The settled text is always a prefix of
    `extract_reply` of any continuation of `generated` (and empty when that is the fallback)."""
    cut = _first_stop(generated, eos_token)
    if cut is not None:
        return generated[:cut].strip(), True
    hold = len(generated)
    for stop in _stops(eos_token):  # a literal stop being spelled out at the end
        for size in range(1, len(stop)):
            if generated.endswith(stop[:size]):
                hold = min(hold, len(generated) - size)
    start = generated.rfind("<")
    while start != -1:
        if _MARKER_START.fullmatch(generated, start):
            hold = min(hold, start)
        start = generated.rfind("<", 0, start)
    return generated[:hold].strip(), False
