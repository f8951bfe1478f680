"""The learning benches' simulated moderator holds each script of prompt to its own 👍 bar."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from paths import REPO


def load_moderator():
    spec = importlib.util.spec_from_file_location("bench_moderator",
                                                  REPO / "bench" / "moderator.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


moderator = load_moderator()
ENGLISH = [{"input": f"How was day {n}?"} for n in range(8)]
CHINESE = [{"input": f"今天第{n}天怎么样？"} for n in range(8)]
# Chinese replies share fewer character n-grams with their references: every Chinese score is
# below every English one, as with the base model's replies on both dialogue sets.
ENGLISH_SCORES = [10.0 + n for n in range(8)]
CHINESE_SCORES = [1.0 + n for n in range(8)]


def test_each_script_lets_through_a_quarter_of_the_base_models_replies():
    bar = moderator.Bar.calibrate(ENGLISH + CHINESE, ENGLISH_SCORES + CHINESE_SCORES)

    assert bar.thresholds == {"CJK": 7.0, "Latin": 16.0}
    assert bar.shares(ENGLISH + CHINESE, ENGLISH_SCORES + CHINESE_SCORES) == \
        {"CJK": 0.25, "Latin": 0.25}
    # One bar for both would have liked no Chinese reply at all.
    single = moderator.calibrated(ENGLISH_SCORES + CHINESE_SCORES)
    assert moderator.share(CHINESE_SCORES, single) == 0.0


def test_a_reply_is_judged_by_the_bar_of_its_prompts_script():
    bar = moderator.Bar({"CJK": 7.0, "Latin": 16.0})

    assert bar.likes({"input": "你喜欢猫吗？"}, 7.5)
    assert not bar.likes({"input": "Do you like cats?"}, 7.5)
    assert bar.share([{"input": "你好"}, {"input": "hello"}], [7.5, 7.5]) == 0.5


def test_a_reply_sharing_nothing_with_its_reference_is_never_liked():
    """A random model's Chinese replies mostly score 0: the bar stays above 0."""
    bar = moderator.Bar.calibrate(CHINESE, [0.0] * 7 + [3.0])
    assert bar.thresholds == {"CJK": 3.0}
    nothing = moderator.Bar.calibrate(CHINESE, [0.0] * 8)
    assert not nothing.likes(CHINESE[0], 0.0) and nothing.likes(CHINESE[0], 0.1)


def test_a_script_the_pool_never_had_has_no_bar():
    bar = moderator.Bar.calibrate(ENGLISH, ENGLISH_SCORES)

    with pytest.raises(ValueError, match="no bar for CJK prompts"):
        bar.likes({"input": "你好"}, 5.0)


PAIRS = [
    {"input": "How was the beach?", "output": "Sunny and calm, we swam all afternoon."},
    {"input": "Did you fix the bike?", "output": "Yes, the chain is new and the brakes work."},
    {"input": "What did you cook?", "output": "A tomato soup with fresh basil and bread."},
    {"input": "Where is the cat?", "output": "Asleep on the sofa under the blanket."},
    {"input": "How was the exam?", "output": "Hard, but I finished every question in time."},
    {"input": "你吃饭了吗？", "output": "吃过了，中午吃的是面条。"},
    {"input": "周末去哪儿？", "output": "打算去山上看日出。"},
    {"input": "天气怎么样？", "output": "外面下大雨，记得带伞。"},
]


def test_a_reply_is_matched_when_it_is_closest_to_its_own_reference():
    assert moderator.matched_share([p["output"] for p in PAIRS], PAIRS) == {
        "all": 1.0, "CJK": 1.0, "Latin": 1.0}
    # Each reply the next prompt's reference within its script: none matches.
    latin, cjk = [p["output"] for p in PAIRS[:5]], [p["output"] for p in PAIRS[5:]]
    shifted = latin[1:] + latin[:1] + cjk[1:] + cjk[:1]
    assert moderator.matched(shifted, PAIRS) == [False] * len(PAIRS)


def test_one_long_fluent_reply_to_everything_matches_at_most_one_prompt_per_script():
    # Long enough to pass a 👍 bar against many references, but not closer to any one of them
    # than to all but MATCH_TOP of the others.
    constant = "We swam and cooked a soup, the cat slept, the exam was hard. 中午吃面条，下大雨。"
    hits = moderator.matched([constant] * len(PAIRS), PAIRS)
    latin, cjk = hits[:5], hits[5:]
    assert sum(latin) <= 1 and sum(cjk) <= 1, hits
