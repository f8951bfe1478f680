"""The exam: the per-server yardstick the gate judges every candidate on.

A yardstick that moves with each cycle protects whatever was learned last: when the gate took
an exchange's newest correction as its reference, ten junk teachings became the references
that refused the clean fix. The exam is made only of endorsed references, and an exchange's
reference, once it has one, does not change when someone teaches again:

- pinned: an admin put the bot's reply on the exam (`/exam add`): that reply is the reference,
  and the exchange never trains;
- taught: on the validation side, the first teaching that survived the trust policy (a
  distrusted or held teaching is not in the endorsed view at all);
- agreed: on the validation side, a reply two or more moderators gave 👍, unless a model the
  gate compares wrote it (greedy decoding would hand that model its own words back);
- imported: on the validation side, a pair the operator imported (`python -m trainer import`):
  people wrote those replies and the operator chose them.

A reply one moderator liked is not on the exam: it was written by an earlier adapter, and judging
candidates against it measures closeness to that adapter. The exam is ordered by a hash of the
exchange id (pins first), so when it holds more than GATE_MAX_PROMPTS the same ones are asked
every cycle and new ones join only where their hash ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.dialogue import Turn
from bot.core.store import Exchange, RatedExchange
from trainer.dataset import split_point

AGREEING_VOTES = 2  # 👍 from this many moderators make a reply endorsed


@dataclass(frozen=True)
class ExamSource:
    """What the exam needs besides the endorsed view: the server's pinned exchanges and the
    moderator hashes imported pairs are rated under."""

    pinned: tuple[Exchange, ...] = ()
    importers: frozenset[str] = frozenset()

    @property
    def pinned_ids(self) -> frozenset[str]:
        return frozenset(exchange.id for exchange in self.pinned)


@dataclass(frozen=True)
class Reference:
    """An exam prompt as the bot was asked it, and the reply the community endorsed."""

    exchange_id: str
    turns: list[Turn]
    style: str | None
    text: str
    source: str = "taught"  # pinned | taught | agreed | imported
    answered_by: str | None = None  # the adapter version whose reply the exchange stored

    @property
    def prompt(self) -> str:
        """What the exam asks: the last turn the bot was asked."""
        return self.turns[-1].text

    def chosen_against(self, version: str) -> bool:
        """Whether this prompt is on the exam because `version` answered it badly: a reply is
        taught after a 👎, so on taught prompts the model that answered starts from its worst
        (greedy, it answers the same again) and any other model looks better there."""
        return self.source == "taught" and self.answered_by == version


def endorsed_reference(item: RatedExchange, compared: frozenset[str],
                       importers: frozenset[str] = frozenset()) -> Reference | None:
    """The exchange's reference in the endorsed view, or None when it has none (`importers`:
    the moderator hashes imports are rated under)."""
    exchange = item.exchange
    if item.corrections:
        first = min(item.corrections, key=lambda c: c.created_at)
        return Reference(exchange.id, exchange.turns(), exchange.style, first.text, "taught",
                         exchange.adapter_version)
    likes = {moderator for moderator, vote in item.votes.items() if vote > 0}
    if likes & importers:
        return Reference(exchange.id, exchange.turns(), exchange.style, exchange.reply,
                         "imported", exchange.adapter_version)
    if len(likes) >= AGREEING_VOTES and exchange.adapter_version not in compared:
        return Reference(exchange.id, exchange.turns(), exchange.style, exchange.reply,
                         "agreed", exchange.adapter_version)
    return None


def pinned_reference(exchange: Exchange) -> Reference:
    return Reference(exchange.id, exchange.turns(), exchange.style, exchange.reply, "pinned",
                     exchange.adapter_version)


def exam_references(endorsed: list[RatedExchange], held_out: set[str], pinned: list[Exchange],
                    limit: int, compared: frozenset[str] = frozenset(),
                    importers: frozenset[str] = frozenset()) -> list[Reference]:
    """The exam (see the module): pins, then the validation side's endorsed references in
    hash order, at most `limit`."""
    pinned_ids = {exchange.id for exchange in pinned}
    found = [pinned_reference(exchange) for exchange in pinned]
    candidates = [item for item in endorsed
                  if item.exchange.id in held_out and item.exchange.id not in pinned_ids]
    for item in sorted(candidates, key=lambda i: split_point(i.exchange.id)):
        reference = endorsed_reference(item, compared, importers)
        if reference is not None:
            found.append(reference)
    return found[:limit]
