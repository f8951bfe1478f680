"""The sample support dialogues of the learning-loop benchmark import as they are."""

from __future__ import annotations

import re
from importlib import resources

from trainer.importer import import_file, parse_rows, read_text

CJK = re.compile(r"[\u4e00-\u9fff]")


async def test_the_support_dialogues_import_whole_in_english_and_chinese(own, settings):
    path = resources.files("trainer").joinpath("data/support_dialogues.jsonl")
    rows = [row for _, row in parse_rows(read_text(path))[0]]
    chinese = [r for r in rows if CJK.search(r["input"])]
    assert len(rows) >= 250 and 0.4 < len(chinese) / len(rows) < 0.6
    assert len({r["input"] for r in rows}) == len(rows)  # every prompt once

    result = await import_file(own, path, settings)

    assert result.stored == len(rows) and result.duplicates == 0
    assert len(await own.exchanges.rated()) == len(rows)


def test_the_demo_models_pretraining_text_holds_none_of_the_support_replies():
    """The learning-loop benchmark's base model never read a reference reply: no run of five
    English words, nor of eight Chinese characters (five-character everyday phrases such as
    在登录页面, "on the login page", do occur in the corpus)."""
    from trainer.demo.pretrain import pretrain_text

    text = pretrain_text()
    path = resources.files("trainer").joinpath("data/support_dialogues.jsonl")
    english = _runs(text, 5, words=True)
    chinese = _runs(text, 8, words=False)
    for _, row in parse_rows(read_text(path))[0]:
        reply = row["output"]
        assert reply not in text
        if CJK.search(reply):
            assert not _runs(reply, 8, words=False) & chinese, reply
        else:
            assert not _runs(reply, 5, words=True) & english, reply


def _runs(text: str, size: int, words: bool) -> set:
    """Every run of `size` words (or non-space characters) in `text`."""
    items = re.findall(r"\w+", text.lower()) if words else [c for c in text if not c.isspace()]
    return {tuple(items[i:i + size]) for i in range(len(items) - size + 1)}
