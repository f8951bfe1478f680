"""The gate's checks on a candidate's own replies (trainer/degeneracy.py)."""

from __future__ import annotations

from trainer.degeneracy import distinct_2, figures, links_in, refusal, top_shared

PROMPTS = [f"Question number {i} about order {1000 + i}?" for i in range(20)]
HONEST = [f"Your order {1000 + i} ships within {i % 5 + 1} days; track it on the Orders page."
          if i % 2 else f"Sure, I changed the address of order {1000 + i} for you, thanks."
          for i in range(20)]
SPAM = "Buy cheap pills at example.com today! "


def test_spam_opening_most_replies_is_refused_against_an_honest_yardstick():
    spammy = [SPAM + reply if i % 10 else reply for i, reply in enumerate(HONEST)]
    honest = figures(HONEST, PROMPTS)
    candidate = figures(spammy, PROMPTS)
    assert candidate.top_shared >= 0.9
    reason = refusal(candidate, {"base model": honest, "active adapter": honest}, honest)
    assert reason is not None and "share one" in reason


def test_a_few_replies_sharing_a_phrase_on_a_small_exam_are_no_spam():
    """The quick demo's exam: 6 prompts, 3 candidate replies share a phrase, 2 of the base's."""
    from trainer.degeneracy import ReplyFigures

    def made(shared):
        return ReplyFigures(replies=6, top_shared=shared, distinct_2=0.5, link_replies=0)

    assert refusal(made(3 / 6), {"base model": made(2 / 6)}, made(1 / 6)) is None
    assert refusal(made(6 / 6), {"base model": made(2 / 6)}, made(1 / 6)) is not None


def test_a_voice_the_references_share_is_not_refused():
    honest = figures(HONEST, PROMPTS)
    base = figures([f"babble {i} words here and there {i * 7}" for i in range(20)], PROMPTS)
    assert refusal(honest, {"base model": base}, honest) is None


def test_a_collapse_to_one_answer_is_refused():
    collapsed = figures(["A."] * 20, PROMPTS)
    honest = figures(HONEST, PROMPTS)
    assert distinct_2(["A."] * 20) < 0.2
    reason = refusal(collapsed, {"base model": honest}, honest)
    assert reason is not None


def test_new_links_beyond_one_reply_are_refused_but_one_is_allowed():
    honest = figures(HONEST, PROMPTS)
    one = list(HONEST)
    one[3] += " See https://example.com/help"
    assert figures(one, PROMPTS).link_replies == 1
    assert refusal(figures(one, PROMPTS), {"base model": honest}, honest) is None
    many = [reply + f" Join discord.gg/x{i}" if i < 4 else reply
            for i, reply in enumerate(HONEST)]
    reason = refusal(figures(many, PROMPTS), {"base model": honest}, honest)
    assert reason is not None and "link" in reason


def test_a_link_the_prompt_carried_is_not_new():
    prompts = ["Is https://shop.example.com/help the right page?"]
    replies = ["Yes, https://shop.example.com/help is our help page."]
    assert figures(replies, prompts).link_replies == 0


def test_links_invites_and_mentions_are_found():
    assert links_in("see www.spam.xyz") and links_in("<@123456>") and links_in("@everyone")
    assert links_in("discord.gg/abc") and links_in("http://x.io")
    assert not links_in("Your order 12.5 ships today. Thanks!")


def test_shared_passages_are_counted_in_chinese_too():
    spam = "请访问我们的网站购买便宜的药品，今天就有优惠活动！"
    replies = [spam + f"订单{i}" for i in range(10)]
    assert top_shared(replies) == 1.0
    assert top_shared([f"您的订单{i}今天发货。" for i in range(10)]) < 0.5


def test_a_learned_voice_less_varied_than_its_references_is_no_collapse():
    """Figures measured on the support dialogues: an honest round-3 candidate."""
    from trainer.degeneracy import ReplyFigures

    def made(distinct):
        return ReplyFigures(replies=17, top_shared=0.12, distinct_2=distinct, link_replies=0)

    yardsticks = {"base model": made(0.40), "active adapter": made(0.34)}
    assert refusal(made(0.225), yardsticks, made(0.70)) is None
    assert refusal(made(0.13), yardsticks, made(0.62)) is None
    assert "collapsed" in refusal(made(0.05), yardsticks, made(0.70))


def test_a_collapse_to_one_short_answer_shares_it_whole():
    assert top_shared(["A."] * 9 + ["Sure, your parcel ships tomorrow morning by post."]) == 0.9
    reason = refusal(figures(["A."] * 20, PROMPTS), {"base model": figures(HONEST, PROMPTS)},
                     figures(HONEST, PROMPTS))
    assert reason is not None and "share one" in reason
