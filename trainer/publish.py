"""Publishing, the cycle's last step: the registry gets the bytes and record, then the report,
then the active pointer moves by compare-and-set from the version that was active when the
cycle started, so a rollback made meanwhile is never overwritten. A process killed before that
last move leaves the service as it was. With CANARY_SHARE > 0 the last move starts a canary
instead (same compare-and-set): the candidate answers that share of new conversations and
moderators' live ratings decide (trainer/canary.py).
"""

from __future__ import annotations

import logging

from bot.core.store import BASE_VERSION, AdapterRecord, StoreError
from bot.core.store.canary import Canaries, Canary
from bot.core.store.registry import Registry

log = logging.getLogger(__name__)


class PublishRefused(StoreError):
    """The active adapter changed while the candidate trained; nothing was swapped."""

    def __init__(self, message: str, version: str):
        super().__init__(message)
        self.version = version


async def publish(registry: Registry, record: AdapterRecord, blob: bytes, report: dict,
                  png: bytes | None, *, canaries: Canaries | None = None,
                  share: float = 0.0) -> AdapterRecord:
    """Save the candidate and its report in one server's `registry`, then make it that
    server's active adapter if `record.parent` still serves it (with `canaries` and a `share`
    above 0: that server's canary, replacing one that runs).

    Raises PublishRefused (the adapter stays in the registry, inactive) when the active version
    moved away from the parent meanwhile.
    """
    saved = await registry.save(record, blob)
    # The report lands before activation, so the bot can post it as soon as it hears the event.
    await registry.save_report(saved.version, {**report, "version": saved.version}, png)
    try:
        if canaries is not None and share > 0:
            replaced = await canaries.start(Canary(version=saved.version,
                                                   active=record.parent or BASE_VERSION,
                                                   share=share, gate=report.get("reason", "")))
            log.info("%s is the canary for %.0f%% of new conversations%s", saved.version,
                     share * 100, f" (replacing {replaced.version})" if replaced else "")
        else:
            await registry.activate(saved.version, expected=record.parent)
    except StoreError as error:
        raise PublishRefused(f"saved as {saved.version} but not activated: {error}",
                             saved.version) from None
    log.info("published %s (parent %s, sha256 %s…)", saved.version, record.parent,
             saved.sha256[:12])
    return saved
