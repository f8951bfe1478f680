"""How answers word what they show: a training cycle's `learned` record in lines that fit."""

from __future__ import annotations

from bot.core.store import HeldItem
from bot.service.answer_text import ANSWER_LIMIT, fitted, learned_lines
from trainer.summary import exam_answers, headline, held_items


def test_the_lines_say_what_was_held_refused_and_answered():
    held = [HeldItem(exchange_id="x", moderator_hash="h", moderator_name="Spammer",
                     kind="teach", text="Buy cheap pills at example.com today!",
                     reason="a link")]
    samples = [{"prompt": "What are your hours?", "reference": "Nine to six.",
                "base": "babble", "active": "We open at nine.", "candidate": "Nine to six."}]
    summary = {"headline": headline("rejected", "", "v2", "degeneracy: 90% share", "degeneracy"),
               "taught": [{"text": "Nine to six.", "count": 3, "moderators": ["Ann"]}],
               "held": held_items(held, newly=1), "exam": exam_answers(samples, "v2")}
    lines = learned_lines(summary)
    assert lines[0].startswith("Refused by the degeneracy check, v2 keeps serving")
    assert any("“Nine to six.” ×3 (Ann)" in line for line in lines)
    assert any(line.startswith("Held for review: 1 (1 new)") and "Spammer" in line
               and "a link" in line for line in lines)
    assert any("before [v2] “We open at nine.” → after “Nine to six.”" in line
               for line in lines)


def test_lines_past_the_limit_are_left_out_whole():
    lines = ["a" * 900, "b" * 900, "c" * 900]
    assert fitted(lines) == "a" * 900 + "\n" + "b" * 900
    assert len(fitted(["x" * 5000])) == ANSWER_LIMIT
    assert fitted([]) == ""
