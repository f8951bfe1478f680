"""Importing prompt/reply pairs: good rows stored and rated, bad files store nothing, duplicates
once, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from store_util import TENANT, exchange_count, raw_redis
from subprocess_env import settings_env

from bot.core.dialogue import Turn
from bot.core.store import Exchange
from trainer.importer import ImportRejected, import_file, import_pairs, validate_rows

GOOD = [
    {"input": "How do I reset my password?", "output": "Use the 'forgot password' link."},
    {"input": "And then?", "output": "Check your inbox for the reset mail.",
     "style": "Answer as a polite support agent:",
     "context": ["How do I reset my password?", "Use the 'forgot password' link."]},
    {"input": "thanks", "output": "You are welcome!",
     "context": [{"role": "user", "text": "hi"}, {"role": "bot", "text": "hello"}]},
]


async def test_good_rows_become_positively_rated_kept_exchanges(store, own):
    result = await import_pairs(own, GOOD)
    assert result.stored == 3 and result.duplicates == 0

    rated = {r.exchange.user_message: r for r in await own.exchanges.rated()}
    assert set(rated) == {"How do I reset my password?", "And then?", "thanks"}
    second = rated["And then?"]
    assert second.score == 1 and second.ratings == 1
    assert second.exchange.source == "import"
    assert second.exchange.reply == "Check your inbox for the reset mail."
    assert second.exchange.style == "Answer as a polite support agent:"
    # Strings alternate and end with the bot's turn just before "input".
    assert second.exchange.turns() == [Turn("user", "How do I reset my password?"),
                                       Turn("bot", "Use the 'forgot password' link."),
                                       Turn("user", "And then?")]
    assert [t.role for t in rated["thanks"].exchange.context] == ["user", "bot"]
    for exchange_id in result.ids:
        assert await raw_redis(store).ttl(store.keys("ex", exchange_id)) == -1  # kept forever
    # Each imported pair is one new rating for MIN_NEW_RATINGS.
    assert (await own.trainer.snapshot()).new_ratings == 3


async def test_a_bad_row_rejects_the_whole_file_with_row_numbers(store, own):
    rows = [GOOD[0],
            {"input": "", "output": "x"},
            {"input": "q", "ouput": "typo"},
            "just a string",
            {"input": "q", "output": "a", "context": ["a", 3]},
            {"input": "q", "output": "a", "context": [{"role": "admin", "text": "x"}]},
            {"input": "q", "output": "a", "style": 5},
            GOOD[1]]
    with pytest.raises(ImportRejected) as caught:
        await import_pairs(own, rows)
    errors = caught.value.errors
    assert [e.split(":")[0] for e in errors] == [
        "row 2", "row 3", "row 3", "row 4", "row 5", "row 6", "row 7"]
    assert '"input" must be a non-empty string' in errors[0]
    assert "unknown key(s) ouput" in errors[1] and '"output"' in errors[2]
    assert "context turn 1" in errors[5]
    assert await exchange_count(store) == 0
    assert (await own.trainer.snapshot()).new_ratings == 0


async def test_duplicates_are_stored_once(store, tmp_path, own):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in [GOOD[0], GOOD[1], GOOD[0]]) + "\n\n")
    first = await import_file(own, path)
    assert (first.stored, first.duplicates) == (2, 1)
    again = await import_file(own, path)  # an earlier import counts too
    assert (again.stored, again.duplicates) == (0, 3)
    assert await exchange_count(store) == 2
    assert (await own.trainer.snapshot()).new_ratings == 2
    # The same words with another style are another pair.
    restyled = await import_pairs(own, [{**GOOD[0], "style": "Be brief:"}])
    assert restyled.stored == 1


async def test_bad_json_lines_are_reported_by_line(store, tmp_path, own):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n{not json\n\n" + json.dumps({"input": "x"}) + "\n")
    with pytest.raises(ImportRejected) as caught:
        await import_file(own, path)
    assert caught.value.errors[0].startswith("row 2: not valid JSON")
    assert await exchange_count(store) == 0
    (tmp_path / "empty.json").write_text("  \n")
    with pytest.raises(ImportRejected, match="no rows"):
        await import_file(own, tmp_path / "empty.json")


def run_import(settings, path, cwd):
    env = settings_env(settings)
    return subprocess.run([sys.executable, "-m", "trainer", "import", str(path)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


async def test_command_line_import(settings, store, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD + [GOOD[2]]))
    done = run_import(settings, good, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported 3 pair(s)" in done.stdout and "1 duplicate(s) skipped" in done.stdout

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([GOOD[0], {"input": "only input"}]))
    failed = run_import(settings, bad, tmp_path)
    assert failed.returncode == 1
    assert "nothing imported" in failed.stderr and "row 2:" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert await exchange_count(store) == 3


# --- all or nothing, bounded -----------------------------------------------------------------

def write_lines(path, rows) -> None:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n"
                            for row in rows), encoding="utf-8")


async def test_a_lone_surrogate_in_row_50_stores_nothing(store, tmp_path, own):
    """It used to store rows 1-49, then fail with UnicodeEncodeError."""
    rows = [{"input": f"question {n}", "output": f"answer {n}"} for n in range(1, 50)]
    rows.append({"input": "question 50", "output": "broken \ud800 answer"})
    path = tmp_path / "pairs.jsonl"
    write_lines(path, [json.dumps(row) for row in rows])  # json writes it as \ud800

    with pytest.raises(ImportRejected) as caught:
        await import_file(own, path)

    assert caught.value.errors == ['row 50: "output" is not valid text (a lone surrogate at '
                                   'character 8)']
    assert await exchange_count(store) == 0
    assert (await own.trainer.snapshot()).new_ratings == 0


async def test_every_bad_row_is_reported_in_one_pass(store, tmp_path, own):
    path = tmp_path / "pairs.jsonl"
    write_lines(path, [GOOD[0], "{not json", GOOD[1], {"input": "only input"},
                       "[" * 5000 + "]" * 5000, {"input": "x", "output": "y" * 101}])
    with pytest.raises(ImportRejected) as caught:
        await import_file(own, path, settings=_limited(100))
    assert caught.value.errors == [
        "row 2: not valid JSON (Expecting property name enclosed in double quotes)",
        'row 4: "output" must be a non-empty string',
        "row 5: not a flat object",
        'row 6: "output" has 101 characters, more than MAX_MESSAGE_CHARS=100']
    assert await exchange_count(store) == 0


async def test_deeply_nested_rows_of_a_json_list_are_named(store, tmp_path, own):
    nested = '{"input": "q", "output": "a", "context": ' + "[" * 5000 + "]" * 5000 + "}"
    path = tmp_path / "pairs.json"
    path.write_text(f"[{json.dumps(GOOD[0])}, {nested}, {json.dumps({'input': 'x'})}]")
    with pytest.raises(ImportRejected) as caught:
        await import_file(own, path)
    assert caught.value.errors == ["row 2: not a flat object",
                                   'row 3: "output" must be a non-empty string']
    assert await exchange_count(store) == 0


async def test_a_row_over_the_size_limit_is_refused_by_name(store, own):
    too_long = [GOOD[0], {"input": "q", "output": "a", "context": ["c" * 101, "fine"]},
                {"input": "q", "output": "a", "style": "s" * 60}]
    with pytest.raises(ImportRejected) as caught:
        await import_pairs(own, too_long, settings=_limited(100, style=50))
    assert caught.value.errors == [
        "row 2: context turn 1 has 101 characters, more than MAX_MESSAGE_CHARS=100",
        'row 3: "style" has 60 characters, more than STYLE_MAX_CHARS=50']
    assert await exchange_count(store) == 0


async def test_a_style_with_invisible_characters_is_refused(store, own):
    with pytest.raises(ImportRejected, match="row 1: .*invisible.*U\\+202E"):
        await import_pairs(own, [{**GOOD[0], "style": "Be kind \u202e:olleh"}])


async def test_a_byte_order_mark_is_accepted_and_bad_bytes_are_named(store, tmp_path, own):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD[0]).encode() + b"\n")
    assert (await import_file(own, path)).stored == 1
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(json.dumps(GOOD[1]).encode() + b'\n{"input": "caf\xe9", "output": "x"}\n')
    with pytest.raises(ImportRejected) as caught:
        await import_file(own, bad)
    assert caught.value.errors == ["row 2: not UTF-8 text (byte 15 of the line)"]
    assert await exchange_count(store) == 1


async def test_an_exchange_left_without_its_rating_is_completed_not_a_duplicate(store, own):
    """An import killed between its two writes left an exchange without the rating, which
    then blocked every re-import as a duplicate. Imports now write both in one script."""
    [pair] = validate_rows([(1, GOOD[0])])
    exchange_id = pair.exchange_id_in(TENANT)
    orphan = Exchange(id=exchange_id, source="import", tenant=TENANT, user_message=pair.input,
                      reply=pair.output, adapter_version="import")
    await store.exchanges.add(orphan, keep=True)

    result = await import_pairs(own, [GOOD[0]])

    assert (result.stored, result.duplicates) == (1, 0)
    assert await store.exchanges.ratings(exchange_id) == {store.user_hash("import"): 1}
    stats = await own.exchanges.stats()
    assert stats["total"]["exchanges"] == 1 and stats["per_version"]["import"]["positive"] == 1
    again = await import_pairs(own, [GOOD[0]])
    assert (again.stored, again.duplicates) == (0, 1)


async def test_the_counters_match_a_rating_made_by_hand(store, own):
    """The import script keeps the same counters as store.exchanges.rate would."""
    result = await import_pairs(own, GOOD)
    stats = await own.exchanges.stats()
    assert stats["per_version"]["import"] == {"exchanges": 3, "rated": 3, "positive": 3,
                                              "positive_share": 1.0}
    assert [r.score for r in await own.exchanges.rated()] == [1, 1, 1]
    assert len(result.ids) == 3


def _limited(max_chars: int, style: int = 200):
    from bot.core.config import load_settings

    return load_settings(_env_file=None, max_message_chars=max_chars,
                         style_max_chars=style)
