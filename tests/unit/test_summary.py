"""What a cycle learned, in words (trainer/summary.py)."""

from __future__ import annotations

from bot.core.store import Correction, Exchange, RatedExchange
from trainer.summary import headline, taught_since


def taught(exchange_id, text, name, at):
    exchange = Exchange(id=exchange_id, tenant=1, user_message=f"q {exchange_id}", reply="r")
    return RatedExchange(exchange=exchange, score=-1, ratings=1, corrections=[
        Correction(exchange_id=exchange_id, moderator_hash=name, moderator_name=name,
                   text=text, created_at=at)])


def test_taught_replies_are_grouped_counted_and_named_since_the_last_cycle():
    endorsed = [taught("a", "Our support team answers from nine to six.", "Ann", 10.0),
                taught("b", "Our support team answers from nine to six!", "Bo", 11.0),
                taught("c", "Refunds take five working days.", "Ann", 12.0),
                taught("d", "An old teaching from before.", "Ann", 1.0)]
    found = taught_since(endorsed, since=5.0)
    assert found[0] == {"text": "Our support team answers from nine to six.", "count": 2,
                        "moderators": ["Ann", "Bo"]}
    assert [t["text"] for t in found] == ["Our support team answers from nine to six.",
                                          "Refunds take five working days."]
    assert len(taught_since(endorsed, since=None)) == 3


def test_a_promotion_headline_names_the_versions():
    assert headline("promoted", "v3", "v2", "beats it", None) == "Promoted v3 (was v2): beats it"
    assert headline("skipped", None, None, "no usable data", None) == "Skipped: no usable data"
