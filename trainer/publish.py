"""The gate and the publish step: a candidate goes into service only if it beats what serves.

The gate compares validation losses measured on the same validation set: the candidate must be
lower than the active adapter's by at least GATE_MARGIN (nats per reply token), and lower than
the base model's. Publishing is the cycle's last step: the registry gets the bytes and record,
then the report, then the active pointer moves by compare-and-set from the version that was
active when the cycle started, so a rollback made meanwhile is never overwritten. A process
killed before that last move leaves the service as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.store import AdapterRecord, StoreError
from bot.store.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def gate(*, candidate: float, active: float | None, base: float, margin: float) -> GateDecision:
    """Whether `candidate` may replace the active adapter (`active` None: the base serves)."""
    reference = base if active is None else active
    if not candidate <= reference - margin:
        return GateDecision(False, f"candidate val loss {candidate:.4f} is not below the active "
                                   f"{reference:.4f} by the margin {margin:g}")
    if not candidate < base:
        return GateDecision(False, f"candidate val loss {candidate:.4f} is not below the base "
                                   f"model's {base:.4f}")
    return GateDecision(True, f"candidate val loss {candidate:.4f} beats the active "
                              f"{reference:.4f} by {reference - candidate:.4f} "
                              f"(margin {margin:g})")


class PublishRefused(StoreError):
    """The active adapter changed while the candidate trained; nothing was swapped."""

    def __init__(self, message: str, version: str):
        super().__init__(message)
        self.version = version


async def publish(registry: Registry, record: AdapterRecord, blob: bytes, report: dict,
                  png: bytes | None) -> AdapterRecord:
    """Save the candidate and its report in one server's `registry`, then make it that
    server's active adapter if `record.parent` still serves it.

    Raises PublishRefused (the adapter stays in the registry, inactive) when the active version
    moved away from the parent meanwhile.
    """
    saved = await registry.save(record, blob)
    # The report lands before activation, so the bot can post it as soon as it hears the event.
    await registry.save_report(saved.version, {**report, "version": saved.version}, png)
    try:
        await registry.activate(saved.version, expected=record.parent)
    except StoreError as error:
        raise PublishRefused(f"saved as {saved.version} but not activated: {error}",
                             saved.version) from None
    log.info("published %s (parent %s, sha256 %s…)", saved.version, record.parent,
             saved.sha256[:12])
    return saved
