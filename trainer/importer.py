"""Import prompt/reply pairs to start an adapter before live ratings exist.

A file is a JSON list of rows, or JSON lines (one row per line; blank lines are skipped).
A row is an object:

    {"input": "user message", "output": "the reply to learn",
     "style": "optional style prefix",
     "context": ["earlier user message", "bot reply", ...]}

`context` holds the earlier turns, oldest first, and is either a list of strings that
alternate user/bot and end with the bot's turn (the one just before `input`), or a list of
{"role": "user"|"bot", "text": ...} objects. Every row is checked before anything is stored:
one bad row rejects the whole file, each problem reported with its row number (the list index
from 1, or the line number of a JSON lines file). A pair's id is a hash of its content and
server, so the same pair (in one file or across imports) is stored once per server. Each stored
pair is an exchange of that server with source "import", kept forever, with a positive rating
from the moderator "import": it is a training target and counts as a new rating for
MIN_NEW_RATINGS.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from bot.store import Exchange, TenantStore, TurnRecord

IMPORT_MODERATOR = "import"
ALLOWED_KEYS = {"input", "output", "style", "context"}


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
    """(row number, parsed value) for a JSON list or JSON lines text; raises ImportRejected."""
    stripped = text.strip()
    if not stripped:
        raise ImportRejected(["the file holds no rows"])
    if stripped.startswith("["):
        try:
            rows = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise ImportRejected([f"not valid JSON: {error}"]) from None
        return list(enumerate(rows, start=1))
    rows, errors = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            errors.append(f"row {number}: not valid JSON ({error.msg})")
    if errors:
        raise ImportRejected(errors)
    return rows


def _text(row: dict, key: str, problems: list[str]) -> str | None:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        problems.append(f'"{key}" must be a non-empty string')
        return None
    return value.strip()


def _context(value, problems: list[str]) -> tuple[TurnRecord, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append('"context" must be a list')
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
            turns.append(TurnRecord(role=role, text=text.strip()))
    return tuple(turns)


def validate_rows(rows: list[tuple[int, object]]) -> list[Pair]:
    """Every row as a Pair, or ImportRejected listing every bad row."""
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
        user_input, output = _text(row, "input", problems), _text(row, "output", problems)
        style = row.get("style")
        if style is not None and not isinstance(style, str):
            problems.append('"style" must be a string')
        style = style.strip() or None if isinstance(style, str) else None
        context = _context(row.get("context"), problems)
        if problems:
            errors.extend(f"row {number}: {problem}" for problem in problems)
        else:
            pairs.append(Pair(input=user_input, output=output, style=style, context=context))
    if errors:
        raise ImportRejected(errors)
    return pairs


async def import_pairs(store: TenantStore, rows: list) -> ImportResult:
    """Validate parsed rows (numbered from 1) and store the new pairs."""
    return await store_pairs(store, validate_rows(list(enumerate(rows, start=1))))


async def import_file(store: TenantStore, path: str | Path) -> ImportResult:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ImportRejected([f"cannot read {path}: {error}"]) from None
    return await store_pairs(store, validate_rows(read_rows(text)))


async def store_pairs(store: TenantStore, pairs: list[Pair]) -> ImportResult:
    """Store each pair not stored yet in this server, with its positive rating from
    "import"."""
    if not pairs:
        raise ImportRejected(["the file holds no rows"])
    result, seen = ImportResult(), set()
    for pair in pairs:
        exchange_id = pair.exchange_id_in(store.tenant)
        if exchange_id in seen or await store.exchanges.exists(exchange_id):
            result.duplicates += 1
            continue
        seen.add(exchange_id)
        exchange = Exchange(id=exchange_id, source="import", tenant=store.tenant,
                            context=list(pair.context),
                            user_message=pair.input, style=pair.style, reply=pair.output,
                            adapter_version="import")
        await store.exchanges.add(exchange, keep=True)
        await store.exchanges.rate(exchange_id, IMPORT_MODERATOR, 1)  # also logs the rating event
        result.stored += 1
        result.ids.append(exchange_id)
    return result
