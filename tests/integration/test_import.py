"""Importing prompt/reply pairs: good rows stored and rated, bad files store nothing, duplicates
once, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from store_util import exchange_count
from subprocess_env import settings_env

from bot.dialogue import Turn
from trainer.importer import ImportRejected, import_file, import_pairs

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
        assert await store.r.ttl(store.k("ex", exchange_id)) == -1  # kept forever
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
