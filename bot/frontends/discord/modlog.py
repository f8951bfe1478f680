"""A server's mod log: each adapter change posted with what its training cycle learned, its
report's numbers and loss curve; a cycle that refused its candidate or held teachings is posted
too (a "cycle" event from the trainer), with what it learned, held or refused, and so is a
canary's start and end with the live test's numbers.

Every bot process follows the registry and sees each change; the first to claim it in the
store posts it, so a change is posted once however many processes (shards) run.
"""

from __future__ import annotations

import io
import logging

import discord

from bot.core.store import Store, StoreUnavailable
from bot.frontends.discord.cogs.replies import MESSAGE_LIMIT
from bot.service.answer_text import fitted, learned_lines, refusal_line
from bot.service.canary_actions import canary_line
from bot.service.trust_actions import cycle_lines

log = logging.getLogger(__name__)

MODLOG_NUMBERS = 30  # report entries shown in a modlog post
MODLOG_VALUE_CHARS = 200
MODLOG_CLAIM_S = 600  # how long one adapter change counts as announced


def modlog_text(event, report: dict | None, cycle: list[str] | None = None) -> str:
    """The post for an adapter change: what its training cycle learned (the report's
    `learned`, in words), then the report's numbers, nested ones (val_loss.candidate,
    hyperparameters.learning_rate, ...) flattened one level; long lists are left out. A
    refused adapter is one line; a "cycle" event (a refused candidate, new holds) is
    `cycle`: its learned lines."""
    if event.kind == "refused":
        return f"Adapter {refusal_line(event.version, event.reason, event.previous)}"
    if event.kind == "canary":
        return fitted([canary_line(event)], MESSAGE_LIMIT)
    if event.kind == "cycle":
        return fitted([f"Training cycle: {event.version} keeps serving", *(cycle or [])],
                      MESSAGE_LIMIT)
    verb = "rolled back to" if event.kind == "rollback" else "now serving"
    lines = [f"Adapter change: {verb} **{event.version}** (was {event.previous})",
             *learned_lines((report or {}).get("learned") or {})]
    head, flat = len(lines), {}
    for key, value in (report or {}).items():
        if key == "learned":
            continue  # in words above
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    for key, value in flat.items():
        if isinstance(value, float):
            lines.append(f"{key}: {value:.4g}")
        elif isinstance(value, int | str) and len(str(value)) <= MODLOG_VALUE_CHARS:
            lines.append(f"{key}: {value}")
    return fitted(lines[:head + MODLOG_NUMBERS], MESSAGE_LIMIT)


class ModLog:
    """Posts adapter changes to each server's mod-log channel through `client`."""

    def __init__(self, client: discord.Client, store: Store, settings):
        self.client, self.store, self.settings = client, store, settings

    async def channel_id(self, tenant: int | None) -> int | None:
        """Where a server's adapter changes go: its own setting, else MODLOG_CHANNEL_ID for
        the home server."""
        if tenant is None:
            return None
        channel_id = await self.store.tenant(tenant).modlog_channel()
        if channel_id is None and tenant == self.settings.home_guild_id:
            channel_id = self.settings.modlog_channel_id
        return channel_id

    async def announce(self, event, record) -> None:
        """Post an adapter change with its report and loss curve to that server's mod log."""
        channel_id = await self.channel_id(event.tenant)
        if channel_id is None:
            return
        try:
            kind = f"{event.kind}-{event.reason}" if event.kind == "canary" else event.kind
            if not await self.store.claim("modlog", kind, event.version, event.previous,
                                          ttl_s=MODLOG_CLAIM_S):
                return
            report, png = ((None, None) if event.kind in ("refused", "cycle", "canary")
                           else await self.store.registry.report(event.version))
            cycle = await cycle_lines(self.store, event) if event.kind == "cycle" else None
            if event.kind == "cycle" and not cycle:
                return  # its record is gone: nothing to say
        except StoreUnavailable as error:
            log.warning("adapter change to %s not posted to the modlog: the store is "
                        "unavailable (%s)", event.version, error)
            return
        files = [discord.File(io.BytesIO(png), filename=f"loss-{event.version}.png")] if png \
            else []
        try:
            channel = (self.client.get_channel(channel_id)
                       or await self.client.fetch_channel(channel_id))
            await channel.send(modlog_text(event, report, cycle), files=files)
        except discord.HTTPException as error:
            log.warning("could not post to the modlog channel %s: %s", channel_id, error)
