"""Messages deleted in Discord leave the store: a deleted question forgets its exchange, a
deleted message leaves every exchange holding it as context, a deleted reply's exchange leaves
the training data. A deleted channel or thread takes every exchange said there with it.

A reply is stored only once it is shown, so a message deleted while its reply was being made
is not in the store yet: deleted ids are remembered for DELETIONS_KEPT_S, and the conversation
takes them out of the exchange it keeps (`among`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from bot.core.store import Store, StoreUnavailable
from bot.core.store.privacy import Deleted
from bot.service.retry import with_retries

log = logging.getLogger(__name__)

DELETIONS_KEPT_S = 900.0


class Deletions:
    def __init__(self, store: Store):
        self.store = store
        self._seen: dict[int, float] = {}  # message id -> when its deletion was seen

    async def deleted(self, message_ids: set[int]) -> None:
        """Messages were deleted: remember them a while and take them out of the store (a store
        that stays unavailable is logged; the deletion is not applied then)."""
        now = time.monotonic()
        self._seen = {i: t for i, t in self._seen.items() if now - t < DELETIONS_KEPT_S}
        self._seen.update(dict.fromkeys(message_ids, now))
        try:
            done = await self.apply(message_ids)
        except StoreUnavailable as error:
            log.error("%d deleted message(s) not applied to the store: it is unavailable (%s)",
                      len(message_ids), error)
            return
        if done.exchanges or done.context_turns or done.replies:
            log.info("deleted messages applied: %d exchange(s) forgotten, %d context turn(s) "
                     "dropped, %d reply(ies) out of the training data", done.exchanges,
                     done.context_turns, done.replies)

    def among(self, message_ids: Iterable[int | None]) -> list[int]:
        """Those of `message_ids` deleted within DELETIONS_KEPT_S."""
        return [i for i in message_ids if i is not None and i in self._seen]

    async def apply(self, message_ids: Iterable[int]) -> Deleted:
        """Take these messages out of the store. Tried again while the store is unavailable
        (applying a deletion twice changes nothing), then StoreUnavailable is raised."""
        ids = list(message_ids)
        return await with_retries(lambda: self.store.forget_messages(ids),
                                  f"applying {len(ids)} deleted message(s)")

    async def channel_deleted(self, tenant: int, channel_id: int) -> None:
        """A channel or thread of `tenant` was deleted: forget what was said there (logged; a
        store that stays unavailable is logged and the deletion not applied)."""
        try:
            count = await with_retries(lambda: self.store.forget_channel(tenant, channel_id),
                                       f"applying deleted channel {channel_id}")
        except StoreUnavailable as error:
            log.error("deleted channel %s not applied to the store: it is unavailable (%s)",
                      channel_id, error)
            return
        if count:
            log.info("deleted channel %s: %d exchange(s) forgotten", channel_id, count)
