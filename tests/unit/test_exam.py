"""The exam (trainer/exam.py): endorsed references that do not move with each cycle."""

from __future__ import annotations

from bot.core.store import Correction, Exchange, RatedExchange
from trainer.dataset import split_point
from trainer.exam import exam_references


def rated(exchange_id, message, reply, votes=None, corrections=(), version="v1"):
    votes = votes or {}
    exchange = Exchange(id=exchange_id, tenant=1, user_message=message, reply=reply,
                        adapter_version=version)
    return RatedExchange(exchange=exchange, score=sum(votes.values()), ratings=len(votes),
                         votes=votes, corrections=[
                             Correction(exchange_id=exchange_id, moderator_hash=moderator,
                                        text=text, created_at=at)
                             for moderator, text, at in corrections])


ITEMS = [rated("a", "q1", "liked by one", {"m1": 1}),
         rated("b", "q2", "bad reply", {"m1": -1}, [("m1", "first fix", 10.0),
                                                     ("m2", "later fix", 20.0)]),
         rated("c", "q3", "bad reply", {"m1": -1}),  # 👎 without a taught reply
         rated("d", "q4", "agreed reply", {"m1": 1, "m2": 1}),
         rated("e", "q5", "taught but trained on", {"m1": -1}, [("m1", "fix", 5.0)])]
HELD_OUT = {"a", "b", "c", "d"}


def test_the_exam_holds_only_endorsed_references_from_the_validation_side():
    refs = exam_references(ITEMS, HELD_OUT, [], limit=10)
    assert {(r.exchange_id, r.text, r.source) for r in refs} == {
        ("b", "first fix", "taught"), ("d", "agreed reply", "agreed")}
    assert next(r for r in refs if r.exchange_id == "b").turns[-1].text == "q2"


def test_a_new_correction_does_not_move_a_reference():
    before = exam_references(ITEMS, HELD_OUT, [], limit=10)
    ITEMS[1].corrections.append(Correction(exchange_id="b", moderator_hash="m3",
                                           text="Buy cheap pills at example.com!",
                                           created_at=30.0))
    try:
        after = exam_references(ITEMS, HELD_OUT, [], limit=10)
    finally:
        ITEMS[1].corrections.pop()
    assert after == before


def test_pins_come_first_and_never_depend_on_the_split():
    pinned = Exchange(id="p", tenant=1, user_message="pinned question", reply="pinned reply")
    refs = exam_references(ITEMS, HELD_OUT, [pinned], limit=10)
    assert (refs[0].exchange_id, refs[0].text, refs[0].source) == ("p", "pinned reply", "pinned")


def test_the_order_is_by_hash_so_a_capped_exam_asks_the_same_prompts():
    many = [rated(f"x{n}", f"q{n}", "r", corrections=[("m1", f"fix {n}", float(n))])
            for n in range(30)]
    held = {item.exchange.id for item in many}
    first = exam_references(many, held, [], limit=5)
    assert [r.exchange_id for r in first] == sorted(held, key=split_point)[:5]
    grown = many + [rated("new", "q", "r", corrections=[("m1", "fix", 99.0)])]
    again = exam_references(grown, held | {"new"}, [], limit=5)
    kept = [r.exchange_id for r in again if r.exchange_id != "new"]
    assert kept == [r.exchange_id for r in first][:len(kept)]


def test_an_imported_pair_is_endorsed_by_the_operator():
    imported = rated("i", "imported question", "a reply people wrote", {"importer": 1},
                     version="import")
    refs = exam_references([imported], {"i"}, [], limit=10,
                           importers=frozenset({"importer"}))
    assert [(r.text, r.source) for r in refs] == [("a reply people wrote", "imported")]
    assert exam_references([imported], {"i"}, [], limit=10) == []


def test_an_agreed_reply_a_compared_model_wrote_is_no_reference():
    refs = exam_references(ITEMS, HELD_OUT, [], limit=10, compared=frozenset({"base", "v1"}))
    assert [r.exchange_id for r in refs] == ["b"]


def test_a_taught_prompt_is_chosen_against_the_model_that_answered_it_only():
    refs = {r.exchange_id: r for r in exam_references(ITEMS, HELD_OUT, [], limit=10)}
    taught, agreed = refs["b"], refs["d"]
    assert (taught.source, taught.answered_by) == ("taught", "v1")
    # It was taught after v1's 👎'd reply: v1 starts from its worst there, others do not.
    assert taught.chosen_against("v1") and not taught.chosen_against("base")
    # An agreed reply was liked, not picked for a failure.
    assert not agreed.chosen_against("v1")
