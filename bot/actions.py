"""What the admin and moderator commands do, as plain text answers for any front end.

Discord's app commands and the console's text commands both call these, so `/style`,
`/adapter`, `/train`, `/forget` and `/stats` behave the same everywhere. Who may call what is
decided by the front end before it calls in. Nothing here imports discord.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from bot.adapter_io import AdapterLoadError
from bot.chat import StyleRejected, validate_style
from bot.follow import sync_active
from bot.store import BASE_VERSION, AdapterEvent, Store, StoreError, UnknownAdapter

log = logging.getLogger(__name__)

Scope = Literal["channel", "guild"]


async def set_style(settings, store: Store, scope: Scope, scope_id: int, prefix: str,
                    set_by: int | str) -> str:
    try:
        prefix = validate_style(prefix, settings.style_max_chars)
    except StyleRejected as error:
        return f"Style not set: {error}."
    await store.set_style(scope, scope_id, prefix, set_by=set_by)
    where = "this channel" if scope == "channel" else "this server"
    return f"Style for {where} set; the next reply uses it:\n> {prefix}"


async def clear_style(store: Store, scope: Scope, scope_id: int) -> str:
    where = "this channel" if scope == "channel" else "this server"
    if await store.clear_style(scope, scope_id):
        return f"Style for {where} cleared."
    return f"There was no style set for {where}."


async def show_style(store: Store, guild_id: int | None, channel_id: int | None) -> str:
    channel = await store.style_for(None, channel_id) if channel_id is not None else None
    guild = await store.style_for(guild_id, None) if guild_id is not None else None
    lines = []
    if channel:
        lines.append(f"Channel style (in force): {channel.prefix}")
    if guild:
        note = " (overridden here by the channel's)" if channel else " (in force)"
        lines.append(f"Server style{note}: {guild.prefix}")
    return "\n".join(lines) if lines else "No style is set; replies use the plain model voice."


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


LIST_SHOWN = 4  # longer lists (loss curves, trials) stay in the report, out of a status line


def _pairs(values: dict) -> str:
    """`key value` pairs for a status line: nested dicts inline, long lists left out."""
    def fmt(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, dict):
            return f"({_pairs(value)})"
        return str(value)
    shown = {key: value for key, value in values.items()
             if not (isinstance(value, list) and len(value) > LIST_SHOWN)}
    return ", ".join(f"{key} {fmt(value)}" for key, value in shown.items()) or "none recorded"


async def adapter_status(store: Store, engine) -> str:
    version = await store.active_version()
    lines = [f"Active adapter: {version}"]
    if engine.active_version != version:
        lines.append(f"(this process still serves {engine.active_version}; it swaps shortly)")
    if version == BASE_VERSION:
        lines.append("The base model answers without an adapter.")
        return "\n".join(lines)
    try:
        record = await store.adapter_record(version)
    except UnknownAdapter:
        lines.append("Its registry record is missing.")
        return "\n".join(lines)
    lines += [f"Created: {_when(record.created_at)} (parent: {record.parent or BASE_VERSION})",
              f"Metrics: {_pairs(record.metrics)}",
              f"Data: {_pairs(record.data)}",
              f"Hyperparameters: {_pairs(record.hyperparameters)}"]
    return "\n".join(lines)


async def rollback(store: Store, engine) -> tuple[str, AdapterEvent | None]:
    """Move the registry back one version and swap it in here at once (other processes follow
    the registry event). Returns the answer and the change made (None when nothing moved)."""
    previous = await store.active_version()
    try:
        version = await store.rollback()
    except StoreError as error:
        return f"Nothing rolled back: {error}.", None
    event = AdapterEvent(kind="rollback", version=version, previous=previous)
    try:
        serving = await sync_active(store, engine)
    except (StoreError, AdapterLoadError) as error:
        log.error("rolled back to %s but could not load it here: %s", version, error)
        return (f"Rolled back to {version} in the registry, but this process could not load "
                f"it ({error}); it keeps serving {engine.active_version}."), event
    return f"Rolled back from {previous}: now serving {serving}.", event


async def train_now(store: Store, requested_by: str) -> str:
    await store.request_training(requested_by)
    return "Training requested: the trainer starts a cycle at its next check."


async def forget(store: Store, user_id: int | str) -> str:
    count = await store.forget_user(user_id)
    noun = "exchange" if count == 1 else "exchanges"
    return f"Done: deleted {count} {noun} of yours (messages, replies and their ratings)."


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


async def stats(store: Store) -> str:
    numbers = await store.stats()
    total = numbers["total"]
    lines = [f"Exchanges {total['exchanges']}, rated {total['rated']}, positive share "
             f"{_share(total['positive_share'])}, corrections {total['corrections']}"]
    for version, row in sorted(numbers["per_version"].items()):
        lines.append(f"  {version}: exchanges {row['exchanges']}, rated {row['rated']}, "
                     f"positive {_share(row['positive_share'])}")
    return "\n".join(lines)
