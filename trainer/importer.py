"""Import prompt/reply pairs to start an adapter before live ratings exist.

A file is a JSON list of rows, or JSON lines (one row per line; blank lines are skipped), in
UTF-8 (a byte-order mark is accepted). A row is a flat object:

    {"input": "user message", "output": "the reply to learn",
     "style": "optional style prefix",
     "context": ["earlier user message", "bot reply", ...]}

`context` holds the earlier turns, oldest first (at most MAX_CONTEXT_TURNS), and is either a
list of strings that alternate user/bot and end with the bot's turn (the one just before
`input`), or a list of {"role": "user"|"bot", "text": ...} objects. Each text holds at most
MAX_MESSAGE_CHARS characters (a style at most STYLE_MAX_CHARS), and a style may not hold
invisible format characters (as in `/style set`).

All or nothing: every row is checked before anything is stored, every problem of every row is
reported in one pass with its row number (the list index from 1, or the line number of a JSON
lines file), and the good rows are then written in one Redis script, so a failure stores
nothing. A pair's id is a hash of its content and server, so the same pair (in one file or
across imports) is stored once per server. Each stored pair is an exchange of that server with
source "import", kept forever, with a positive rating from the moderator "import": it is a
training target and counts as a new rating for MIN_NEW_RATINGS.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from bot.core.config import Settings
from bot.core.store import Exchange, TenantStore, TurnRecord
from bot.core.text import invisible_characters

IMPORT_MODERATOR = "import"
ALLOWED_KEYS = {"input", "output", "style", "context"}
MAX_CONTEXT_TURNS = 50  # the most CONTEXT_MESSAGES can ask for
MAX_ROW_DEPTH = 3  # row object > context list > turn object
DEFAULT_MAX_CHARS = Settings.model_fields["max_message_chars"].default
DEFAULT_STYLE_CHARS = Settings.model_fields["style_max_chars"].default
NOT_FLAT = "not a flat object"
# What matters to nesting in JSON text: a whole string (skipped), brackets and commas.
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},]')


class ImportRejected(ValueError):
    """The file has bad rows (or is no JSON at all); nothing was stored."""

    def __init__(self, errors: list[str]):
        super().__init__("nothing imported:\n  " + "\n  ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Pair:
    input: str
    output: str
    style: str | None
    context: tuple[TurnRecord, ...]

    def exchange_id_in(self, tenant: int) -> str:
        """The pair's id in a server: a hash of its content, so it is stored once there."""
        content = json.dumps({"input": self.input, "output": self.output, "style": self.style,
                              "context": [[t.role, t.text] for t in self.context],
                              "tenant": tenant}, sort_keys=True, ensure_ascii=False)
        return "imp-" + hashlib.sha256(content.encode()).hexdigest()[:32]


@dataclass
class ImportResult:
    stored: int = 0
    duplicates: int = 0  # rows already stored (earlier in the file or by an earlier import)
    ids: list[str] = field(default_factory=list)  # ids of the stored exchanges


def read_rows(text: str) -> list[tuple[int, object]]:
    """(row number, parsed value) for a JSON list or JSON lines text; raises ImportRejected
    listing every row that is not JSON."""
    rows, errors = parse_rows(text)
    if errors:
        raise ImportRejected(errors)
    return rows


def parse_rows(text: str) -> tuple[list[tuple[int, object]], list[str]]:
    """(row number, parsed value) of every row that parses, and one error per row that does
    not; raises ImportRejected only when the file as a whole is unusable."""
    text = text.removeprefix("\ufeff")
    stripped = text.strip()
    if not stripped:
        raise ImportRejected(["the file holds no rows"])
    if stripped.startswith("["):
        return _parse_list(stripped)
    rows, errors = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            errors.append(f"row {number}: not valid JSON ({error.msg})")
        except RecursionError:
            errors.append(f"row {number}: {NOT_FLAT}")
    return rows, errors


def _parse_list(text: str) -> tuple[list[tuple[int, object]], list[str]]:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise ImportRejected([f"not valid JSON: {error}"]) from None
    except RecursionError:
        return _parse_list_by_row(text)
    if not isinstance(rows, list):
        raise ImportRejected(["not valid JSON lines, nor a JSON list of rows"])
    return list(enumerate(rows, start=1)), []


def _parse_list_by_row(text: str) -> tuple[list[tuple[int, object]], list[str]]:
    """A JSON list too deeply nested to parse whole: each row on its own, and the rows nested
    deeper than a row can be named instead of parsed."""
    rows, errors, depth, start, deepest, number = [], [], 0, 1, 0, 1

    def close_row(end: int) -> None:
        if not text[start:end].strip():
            return
        if deepest > MAX_ROW_DEPTH:
            errors.append(f"row {number}: {NOT_FLAT}")
            return
        try:
            rows.append((number, json.loads(text[start:end])))
        except (json.JSONDecodeError, RecursionError) as error:
            errors.append(f"row {number}: not valid JSON ({getattr(error, 'msg', error)})")

    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth - 1)
        elif token in "]}":
            depth -= 1
            if depth == 0:
                close_row(match.start())
                break
        elif token == "," and depth == 1:
            close_row(match.start())
            start, deepest, number = match.end(), 0, number + 1
    return rows, errors


def _problems_in_text(name: str, value: str, max_chars: int,
                      setting: str = "MAX_MESSAGE_CHARS") -> list[str]:
    problems = []
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        problems.append(f"{name} is not valid text (a lone surrogate at character "
                        f"{error.start + 1})")
    if len(value) > max_chars:
        problems.append(f"{name} has {len(value):,} characters, more than "
                        f"{setting}={max_chars}")
    return problems


def _text(row: dict, key: str, problems: list[str], max_chars: int) -> str | None:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        problems.append(f'"{key}" must be a non-empty string')
        return None
    found = _problems_in_text(f'"{key}"', value, max_chars)
    problems.extend(found)
    return None if found else value.strip()


def _style(value, problems: list[str], max_chars: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append('"style" must be a string')
        return None
    if not value.strip():
        return None
    found = _problems_in_text('"style"', value, max_chars, "STYLE_MAX_CHARS")
    hidden = invisible_characters(value.strip())
    if hidden:  # as /style set refuses them
        found.append(f'"style" holds invisible format or control characters '
                     f"({', '.join(hidden[:5])})")
    problems.extend(found)
    return None if found else value.strip()


def _context(value, problems: list[str], max_chars: int) -> tuple[TurnRecord, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append('"context" must be a list')
        return ()
    if len(value) > MAX_CONTEXT_TURNS:
        problems.append(f'"context" holds {len(value)} turns, more than {MAX_CONTEXT_TURNS}')
        return ()
    if all(isinstance(item, str) for item in value):
        # Strings alternate and end with the bot's turn, the one just before "input".
        roles = ["bot" if (len(value) - i) % 2 == 1 else "user" for i in range(len(value))]
        items = list(zip(roles, value, strict=True))
    elif all(isinstance(item, dict) for item in value):
        items = [(item.get("role"), item.get("text")) for item in value]
    else:
        problems.append('"context" must be all strings or all {"role", "text"} objects')
        return ()
    turns = []
    for index, (role, text) in enumerate(items, start=1):
        if role not in ("user", "bot"):
            problems.append(f'context turn {index}: "role" must be "user" or "bot"')
        elif not isinstance(text, str) or not text.strip():
            problems.append(f"context turn {index}: the text must be a non-empty string")
        else:
            found = _problems_in_text(f"context turn {index}", text, max_chars)
            problems.extend(found)
            if not found:
                turns.append(TurnRecord(role=role, text=text.strip()))
    return tuple(turns)


def check_rows(rows: list[tuple[int, object]], *, max_chars: int = DEFAULT_MAX_CHARS,
               style_max_chars: int = DEFAULT_STYLE_CHARS) -> tuple[list[Pair], list[str]]:
    """The good rows as Pairs, and every problem of the bad ones ("row N: ...")."""
    pairs, errors = [], []
    for number, row in rows:
        problems: list[str] = []
        if not isinstance(row, dict):
            errors.append(f"row {number}: must be an object with \"input\" and \"output\"")
            continue
        unknown = sorted(set(row) - ALLOWED_KEYS)
        if unknown:
            problems.append(f"unknown key(s) {', '.join(unknown)} "
                            f"(allowed: {', '.join(sorted(ALLOWED_KEYS))})")
        user_input = _text(row, "input", problems, max_chars)
        output = _text(row, "output", problems, max_chars)
        style = _style(row.get("style"), problems, style_max_chars)
        context = _context(row.get("context"), problems, max_chars)
        if problems:
            errors.extend(f"row {number}: {problem}" for problem in problems)
        else:
            pairs.append(Pair(input=user_input, output=output, style=style, context=context))
    return pairs, errors


def validate_rows(rows: list[tuple[int, object]], **limits) -> list[Pair]:
    """Every row as a Pair, or ImportRejected listing every bad row."""
    pairs, errors = check_rows(rows, **limits)
    if errors:
        raise ImportRejected(errors)
    return pairs


def _limits(settings) -> dict:
    if settings is None:
        return {}
    return {"max_chars": settings.max_message_chars,
            "style_max_chars": settings.style_max_chars}


def _row_number(error: str) -> int:
    match = re.match(r"row (\d+):", error)
    return int(match.group(1)) if match else 0


async def import_pairs(store: TenantStore, rows: list, settings=None) -> ImportResult:
    """Validate parsed rows (numbered from 1) and store the new pairs; `settings` gives the
    limits (MAX_MESSAGE_CHARS, STYLE_MAX_CHARS; their defaults without it)."""
    pairs = validate_rows(list(enumerate(rows, start=1)), **_limits(settings))
    return await store_pairs(store, pairs)


def read_text(path: str | Path) -> str:
    """The file as text (UTF-8, a byte-order mark dropped); ImportRejected names the lines
    that are not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ImportRejected([f"cannot read {path}: {error.strerror or error}"]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    errors = []
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as error:
            errors.append(f"row {number}: not UTF-8 text (byte {error.start + 1} of the line)")
    raise ImportRejected(errors)


async def import_file(store: TenantStore, path: str | Path, settings=None) -> ImportResult:
    """Read, check and store a file; ImportRejected lists every problem, nothing stored."""
    rows, errors = parse_rows(read_text(path))
    pairs, row_errors = check_rows(rows, **_limits(settings))
    errors = sorted(errors + row_errors, key=_row_number)  # stable: a row's problems in order
    if errors:
        raise ImportRejected(errors)
    return await store_pairs(store, pairs)


async def store_pairs(store: TenantStore, pairs: list[Pair]) -> ImportResult:
    """Store each pair not stored yet in this server, with its positive rating from "import",
    all in one atomic write (duplicates in the file are sent once)."""
    if not pairs:
        raise ImportRejected(["the file holds no rows"])
    result, exchanges, seen = ImportResult(), [], set()
    for pair in pairs:
        exchange_id = pair.exchange_id_in(store.tenant)
        if exchange_id in seen:
            result.duplicates += 1
            continue
        seen.add(exchange_id)
        exchanges.append(Exchange(id=exchange_id, source="import", tenant=store.tenant,
                                  context=list(pair.context), user_message=pair.input,
                                  style=pair.style, reply=pair.output, adapter_version="import"))
    stored = await store.exchanges.import_rated(exchanges, IMPORT_MODERATOR)
    for exchange, was_stored in zip(exchanges, stored, strict=True):
        if was_stored:
            result.stored += 1
            result.ids.append(exchange.id)
        else:
            result.duplicates += 1
    return result
