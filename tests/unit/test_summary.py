"""What a cycle learned, in words (trainer/summary.py)."""

from __future__ import annotations

from bot.core.store import Correction, Exchange, HeldItem, RatedExchange
from trainer.summary import exam_answers, headline, held_items, summary_lines, taught_since


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


def test_the_lines_say_what_was_held_refused_and_answered():
    held = [HeldItem(exchange_id="x", moderator_hash="h", moderator_name="Spammer",
                     kind="teach", text="Buy cheap pills at example.com today!",
                     reason="a link")]
    samples = [{"prompt": "What are your hours?", "reference": "Nine to six.",
                "base": "babble", "active": "We open at nine.", "candidate": "Nine to six."}]
    summary = {"headline": headline("rejected", "", "v2", "degeneracy: 90% share", "degeneracy"),
               "taught": [{"text": "Nine to six.", "count": 3, "moderators": ["Ann"]}],
               "held": held_items(held, newly=1), "exam": exam_answers(samples, "v2")}
    lines = summary_lines(summary)
    assert lines[0].startswith("Refused by the degeneracy check, v2 keeps serving")
    assert any("“Nine to six.” ×3 (Ann)" in line for line in lines)
    assert any(line.startswith("Held for review: 1 (1 new)") and "Spammer" in line
               and "a link" in line for line in lines)
    assert any("before [v2] “We open at nine.” → after “Nine to six.”" in line
               for line in lines)


def test_a_promotion_headline_names_the_versions():
    assert headline("promoted", "v3", "v2", "beats it", None) == "Promoted v3 (was v2): beats it"
    assert headline("skipped", None, None, "no usable data", None) == "Skipped: no usable data"
