"""trainer/trust.py: what a cycle trains on, from every rating and teaching with its moderator."""

from __future__ import annotations

import itertools

import pytest

from bot.core.store import Correction, Exchange, HeldItem, RatedExchange, TrustState
from trainer.exam import exam_references
from trainer.trust import NEAR_DUPLICATE, TrustPolicy, grams, judge, marks, related

POLICY = TrustPolicy(max_share=0.5, min_signals=20, repeat_prompts=3)
NOBODY = TrustState()
UNRELATED_PROMPTS = ["What are your opening hours?", "My parcel has not arrived.",
                     "How do I reset my password?", "我的优惠码用不了。", "Can I pay by card?"]
JUNK = "Buy cheap pills today, best prices!"
_clock = itertools.count(1_000_000)


def rated(prompt: str = "hello", reply: str = "a bot reply", votes: dict | None = None,
          taught: dict | None = None) -> RatedExchange:
    """An exchange with `votes` (moderator -> +1/-1) and `taught` (moderator -> text)."""
    exchange = Exchange(tenant=1, user_message=prompt, reply=reply)
    corrections = [Correction(exchange_id=exchange.id, moderator_hash=m, text=t,
                              created_at=next(_clock)) for m, t in (taught or {}).items()]
    votes = votes or {}
    return RatedExchange(exchange=exchange, score=sum(votes.values()), ratings=len(votes),
                         votes=votes, corrections=corrections)


def taught_texts(verdict) -> list[str]:
    return [c.text for item in verdict.rated for c in item.corrections]


def votes_of(verdict, moderator: str) -> int:
    return sum(moderator in item.votes for item in verdict.rated)


def test_a_junk_reply_taught_on_unrelated_prompts_is_held_for_review_not_trained():
    honest = [rated(p, votes={"honest": 1}) for p in UNRELATED_PROMPTS]
    junk = [rated(p, taught={"spammer": JUNK}) for p in UNRELATED_PROMPTS[:3]]
    # the same junk varied a little (case, punctuation, a word) is the same junk
    junk.append(rated("Tell me a joke.", taught={"spammer": "buy CHEAP pills today, best price"}))

    verdict = judge([*junk, *honest], NOBODY, POLICY)

    assert JUNK not in taught_texts(verdict) and taught_texts(verdict) == []
    assert len(verdict.held) == 4
    assert {item.kind for item in verdict.held} == {"teach"}
    assert all(item.reason == "repeated on 4 unrelated prompts" for item in verdict.held)
    assert verdict.moderators["spammer"].held == 4 and verdict.moderators["spammer"].trained == 0
    assert votes_of(verdict, "honest") == 5  # the honest ratings still train


def test_a_reply_taught_on_fewer_prompts_than_the_bound_trains():
    items = [rated(p, taught={"mod": JUNK}) for p in UNRELATED_PROMPTS[:2]]
    items.append(rated(UNRELATED_PROMPTS[0], taught={"other": JUNK}))  # the same prompt again

    verdict = judge(items, NOBODY, POLICY)

    assert verdict.held == [] and taught_texts(verdict) == [JUNK] * 3


def test_the_same_answer_to_one_question_asked_in_other_words_trains():
    answer = "Standard shipping costs four dollars, and it is free for orders over fifty dollars."
    prompts = ["How much is shipping?", "What does delivery cost?", "Is shipping free?",
               "Do you charge for shipping to Canada?"]

    verdict = judge([rated(p, taught={"mod": answer}) for p in prompts], NOBODY, POLICY)

    assert verdict.held == [] and taught_texts(verdict) == [answer] * 4
    assert related("What does delivery cost?", answer)  # cost ~ costs
    assert related("运费怎么算？", "运费是四元，订单超过五十元免运费。")


@pytest.mark.parametrize(("text", "reason"), [
    ("See https://example.org/page for more", "link"),
    ("Visit example.com today", "link"),
    ("more at www.shop-here.net", "link"),
    ("Join us: discord.gg/abcdef", "invite"),
    ("https://discord.com/invite/abcdef is our server", "invite"),
    ("@everyone look at this", "mention"),
    ("hey @here", "mention"),
    ("ask <@123456789> instead", "mention"),
    ("ask <@!123456789> instead", "mention"),
    ("ping <@&987654321>", "mention"),
    ("go to <#555555>", "mention"),
])
def test_links_invites_and_mentions_hold_a_teaching(text, reason):
    verdict = judge([rated(taught={"mod": text}), rated("other", votes={"mod": 1})], NOBODY,
                    POLICY)

    assert taught_texts(verdict) == []
    assert [(item.kind, item.reason) for item in verdict.held] == [("teach", reason)]
    assert marks(text) == [reason]


def test_everyday_replies_carry_no_marks():
    for text in ["I am fine, thanks! And you?", "Sure, e.g. at 5 p.m. or later.",
                 "我的邮箱是什么？", "Email me at the address on the Orders page.",
                 "Version 2.5 is out."]:
        assert marks(text) == [], text


def test_a_thumbs_up_on_a_reply_with_a_link_is_held_a_thumbs_down_trains():
    spam_reply = "Great deals at example.com!"
    item = rated(reply=spam_reply, votes={"liker": 1, "critic": -1})

    verdict = judge([item], NOBODY, POLICY)

    assert [(h.kind, h.moderator_hash, h.text) for h in verdict.held] == [
        ("like", "liker", spam_reply)]
    [kept] = verdict.rated
    assert kept.votes == {"critic": -1} and kept.score == -1  # an undesirable reply still


def test_a_distrusted_moderators_ratings_and_teachings_are_dropped():
    items = [rated(f"question {n}", votes={"honest": 1, "rogue": -1},
                   taught={"rogue": f"rogue answer {n}"}) for n in range(5)]
    items.append(rated("only rogue", votes={"rogue": 1}))

    trusting = judge(items, NOBODY, POLICY)
    distrusting = judge(items, TrustState(distrusted=frozenset({"rogue"})), POLICY)

    assert votes_of(trusting, "rogue") == 6 and len(taught_texts(trusting)) == 5
    assert votes_of(distrusting, "rogue") == 0 and taught_texts(distrusting) == []
    assert len(distrusting.rated) == 5  # the exchange only the rogue rated is gone
    assert all(item.score == 1 for item in distrusting.rated)
    assert distrusting.moderators["rogue"].distrusted == 11
    assert "rogue" not in {m for item in distrusting.rated for m in item.votes}
    # nor are they the exam's references, which the endorsed view gives (a reply one
    # moderator liked is none either way)
    every = {item.exchange.id for item in items}
    rogue_answers = {f"rogue answer {n}" for n in range(5)}
    assert {r.text for r in exam_references(trusting.rated, every, [], 100)} == rogue_answers
    assert exam_references(distrusting.rated, every, [], 100) == []


def test_a_single_moderator_is_not_bounded_but_still_held():
    items = [rated(f"question number {n}", votes={"solo": 1}) for n in range(100)]
    items += [rated(p, taught={"solo": JUNK}) for p in UNRELATED_PROMPTS]

    verdict = judge(items, NOBODY, POLICY)

    assert verdict.cap is None
    assert votes_of(verdict, "solo") == 100 and verdict.moderators["solo"].capped == 0
    assert len(verdict.held) == 5 and taught_texts(verdict) == []


def test_a_moderators_unagreed_share_is_bounded_newest_kept():
    big = [rated(f"big question {n}", votes={"big": 1}) for n in range(60)]  # newest first
    small = [rated(f"small question {n}", votes={"small": -1}) for n in range(20)]

    verdict = judge([*big, *small], NOBODY, POLICY)

    assert verdict.cap == 40  # max(20, ceil(0.5 * 80))
    kept = [item.exchange.id for item in verdict.rated if "big" in item.votes]
    assert kept == [item.exchange.id for item in big[:40]]  # the 40 newest
    assert verdict.moderators["big"].capped == 20 and verdict.moderators["big"].trained == 40
    assert votes_of(verdict, "small") == 20
    assert verdict.counts()["capped"] == 20


def test_a_handful_of_signals_from_a_second_moderator_bounds_nobody():
    """Fewer than TRUST_MIN_SIGNALS from anyone else: the main moderator is not cut in half
    (measured: ten 👍 of a spammer dropped 109 of an honest moderator's 244 signals)."""
    big = [rated(f"big question {n}", votes={"big": 1}) for n in range(60)]
    small = [rated(f"small question {n}", votes={"small": 1}) for n in range(19)]

    verdict = judge([*big, *small], NOBODY, POLICY)

    assert verdict.cap is None and verdict.moderators["big"].capped == 0
    assert votes_of(verdict, "big") == 60 and votes_of(verdict, "small") == 19


def test_agreement_lifts_the_bound():
    agreed_votes = [rated(f"agreed {n}", votes={"big": 1, "small": 1}) for n in range(30)]
    agreed_teaching = [rated(f"taught {n}", taught={"big": f"The answer is number {n}.",
                                                    "small": f"the answer is number {n}"})
                       for n in range(10)]
    alone = [rated(f"alone {n}", votes={"big": -1}) for n in range(30)]

    verdict = judge([*agreed_votes, *agreed_teaching, *alone], NOBODY, POLICY)

    # 40 signals each agreed + 30 of big's alone = 110 signals: cap 55 > 30
    assert verdict.cap == 55 and verdict.moderators["big"].capped == 0
    assert verdict.moderators["big"].agreed == 40 and verdict.moderators["big"].trained == 70
    assert votes_of(verdict, "big") == 60 and len(taught_texts(verdict)) == 20

    tight = judge([*agreed_votes, *agreed_teaching, *alone], NOBODY,
                  TrustPolicy(max_share=0.1, min_signals=5))
    assert tight.cap == 11  # ceil(0.1 * 110): big keeps 40 agreed + its 11 newest alone
    assert tight.moderators["big"].capped == 19 and tight.moderators["big"].trained == 51


def test_an_approved_item_trains_and_a_rejected_one_is_gone_for_good():
    items = [rated(p, taught={"mod": JUNK}) for p in UNRELATED_PROMPTS]
    first = judge(items, NOBODY, POLICY)
    approved, rejected = first.held[0], first.held[1]
    state = TrustState(decisions={approved.id: "approved", rejected.id: "rejected"})

    verdict = judge(items, state, POLICY)

    assert taught_texts(verdict) == [JUNK]  # the approved one
    assert approved.id not in {h.id for h in verdict.held}
    assert rejected.id not in {h.id for h in verdict.held} and len(verdict.held) == 3
    assert verdict.moderators["mod"].rejected == 1 and verdict.moderators["mod"].agreed == 1


def test_a_changed_teaching_is_a_new_item():
    item = HeldItem(exchange_id="e", moderator_hash="m", kind="teach", text="a", reason="link")
    assert item.id == item.model_copy(update={"reason": "other", "held_at": 1.0}).id
    assert item.id != item.model_copy(update={"text": "b"}).id


def test_the_importer_is_exempt():
    imported = [rated(f"imported {n}", reply=f"See example.com/{n}", votes={"import": 1})
                for n in range(50)]
    mine = [rated(f"mine {n}", votes={"mod": 1}) for n in range(30)]

    verdict = judge([*imported, *mine], NOBODY, POLICY, exempt={"import"})

    assert verdict.held == [] and verdict.cap is None and "import" not in verdict.moderators
    assert votes_of(verdict, "import") == 50 and votes_of(verdict, "mod") == 30


def test_near_duplicate_threshold_separates_spam_variants_from_everyday_replies():
    def jaccard(a, b):
        return len(grams(a) & grams(b)) / len(grams(a) | grams(b))

    assert jaccard("Buy cheap pills at example.com today!",
                   "Buy cheap pills at example.com now!") >= NEAR_DUPLICATE
    assert jaccard("Nice! What are you planning?",
                   "Cool! What are you cooking?") < NEAR_DUPLICATE
    assert jaccard("我很好，谢谢关心！你呢？", "我也很好，谢谢！你呢？") < NEAR_DUPLICATE


def test_a_held_teaching_takes_its_moderators_rating_of_that_exchange_with_it():
    """A spammer who 👍 each exchange they taught an advert on: the held adverts take the 👍
    with them, so the spammer is no second substantial moderator and bounds nobody (measured:
    their 20 signals a round capped the honest moderator at half of all signals)."""
    honest = [rated(f"honest question {n}", votes={"honest": 1}) for n in range(60)]
    spam = [rated(f"spam question {n}", votes={"spammer": 1},
                  taught={"spammer": "Buy cheap pills at example.com today!"}) for n in range(25)]

    verdict = judge([*spam, *honest], NOBODY, POLICY)

    assert len(verdict.held) == 25 and votes_of(verdict, "spammer") == 0
    assert verdict.cap is None and verdict.moderators["honest"].capped == 0
    assert votes_of(verdict, "honest") == 60

    approved = TrustState(decisions={item.id: "approved" for item in verdict.held})
    again = judge([*spam, *honest], approved, POLICY)
    assert votes_of(again, "spammer") == 25  # an approved teaching keeps its rating
