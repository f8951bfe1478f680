"""What every act returns (`Answer`), and the guard that answers an unavailable store.

Shared by the acts of bot/service/actions.py and bot/service/trust_actions.py.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from bot.core.store import AdapterEvent, StoreUnavailable

log = logging.getLogger(__name__)

UNAVAILABLE = "the store is unavailable right now; nothing was changed - please try again soon"


@dataclass(frozen=True)
class Answer:
    """What an act did, in words for the person who asked."""

    text: str
    ok: bool = True  # False: nothing was changed (the text says why)
    event: AdapterEvent | None = None  # an adapter change this act made, to announce


def store_guard(act):
    """An act whose store is unavailable answers so (logged in one line) instead of raising."""
    @functools.wraps(act)
    async def guarded(self, *args, **kwargs) -> Answer:
        try:
            return await act(self, *args, **kwargs)
        except StoreUnavailable as error:
            log.warning("%s not done: the store is unavailable (%s)", act.__name__, error)
            return Answer(f"Sorry, {UNAVAILABLE}.", ok=False)
    return guarded
