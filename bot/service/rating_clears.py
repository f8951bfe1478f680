"""Reactions cleared from a bot reply (all of them, or every 👍 or every 👎) withdraw the
ratings they stood for: Discord sends one event for such a clear, no per-user removals."""

from __future__ import annotations

import logging

from bot.core.store import StoreUnavailable
from bot.service.answer import UNAVAILABLE, Answer
from bot.service.retry import with_retries

log = logging.getLogger(__name__)


async def clear_ratings(actions, tenant: int, message_id: int, value: int | None
                        ) -> Answer | None:
    """Withdraw every rating (of `value`; None: of any value) of the exchange whose reply is
    this message; None when it is not a reply the bot remembers."""
    try:
        exchange = await with_retries(lambda: actions.exchange_of_message(message_id),
                                      f"finding the exchange of message {message_id}")
        if exchange is None:
            return None
        count = await with_retries(
            lambda: actions.store.tenant(tenant).exchanges.withdraw_all(exchange.id, value),
            f"withdrawing the ratings of {exchange.id}")
    except StoreUnavailable as error:
        log.warning("cleared reactions on message %s not applied: the store is unavailable "
                    "(%s)", message_id, error)
        return Answer(f"Clear not stored: {UNAVAILABLE}", ok=False)
    return Answer(f"{count} rating(s) withdrawn")
