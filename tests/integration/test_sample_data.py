"""The data sets written for the project: the support and chit-chat dialogues of the learning
benchmarks import as they are, and neither they nor the general text of the gate's forgetting
check were in the demo model's pretraining text."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import pytest

from trainer.importer import import_file, parse_rows, read_text

CJK = re.compile(r"[\u4e00-\u9fff]")
DIALOGUES = ["support_dialogues.jsonl", "chitchat_dialogues.jsonl"]
GENERAL_TEXT = "general_text.txt"


def data_file(name: str):
    return resources.files("trainer").joinpath(f"data/{name}")


def dialogue_rows(name: str) -> list[dict]:
    return [row for _, row in parse_rows(read_text(data_file(name)))[0]]


@pytest.mark.parametrize("name", DIALOGUES)
async def test_the_dialogues_import_whole_in_english_and_chinese(own, settings, name):
    path = data_file(name)
    rows = dialogue_rows(name)
    chinese = [r for r in rows if CJK.search(r["input"])]
    assert len(rows) >= 250 and 0.4 < len(chinese) / len(rows) < 0.6
    assert len({r["input"] for r in rows}) == len(rows)  # every prompt once

    result = await import_file(own, path, settings)

    assert result.stored == len(rows) and result.duplicates == 0
    assert len(await own.exchanges.rated()) == len(rows)


def test_the_chitchat_replies_are_short_and_each_is_given_once():
    """Chit-chat, unlike support: a sentence or two, and no stock answer for many prompts."""
    rows = dialogue_rows("chitchat_dialogues.jsonl")
    assert len({r["output"] for r in rows}) == len(rows)
    assert max(len(r["output"]) for r in rows) <= 100
    asking = [r for r in rows if r["output"].endswith(("?", "？"))]
    assert 0.4 < len(asking) / len(rows) < 0.9  # the voice asks back, often but not always


@pytest.mark.parametrize("name", DIALOGUES)
def test_the_demo_models_pretraining_text_holds_none_of_the_replies(name):
    """The learning-loop benchmark's base model never read a reference reply: no run of five
    English words, nor of eight Chinese characters (five-character everyday phrases such as
    在登录页面, "on the login page", do occur in the corpus)."""
    from trainer.demo.pretrain import pretrain_text

    text = pretrain_text()
    for row in dialogue_rows(name):
        assert not _shared_runs(row["output"], text), row["output"]


def test_the_general_text_is_english_and_chinese_and_new_to_the_models():
    """The forgetting check reads text the demo model never trained on and no dialogue set
    teaches: a rise in its NLL is forgetting, not learning."""
    from trainer.demo.pretrain import pretrain_text

    lines = data_file(GENERAL_TEXT).read_text("utf-8").splitlines()
    chinese = [line for line in lines if CJK.search(line)]
    assert len(lines) >= 250 and 0.4 < len(chinese) / len(lines) < 0.6
    assert all(line.strip() == line and line for line in lines)
    assert len(set(lines)) == len(lines)
    replies = "\n".join(row["output"] for name in [*DIALOGUES, "customer_service.jsonl"]
                        for row in dialogue_rows(name))
    text = pretrain_text()
    for line in lines:
        assert not _shared_runs(line, text), line
        assert not _shared_runs(line, replies), line


def _shared_runs(line: str, text: str) -> set:
    """`line` whole in `text`, or its runs of five English words (eight Chinese characters)
    that `text` also holds."""
    if line in text:
        return {line}
    if CJK.search(line):
        return _runs(line, 8, words=False) & _runs(text, 8, words=False)
    return _runs(line, 5, words=True) & _runs(text, 5, words=True)


@cache  # each corpus is split once, not once per line
def _runs(text: str, size: int, words: bool) -> frozenset:
    """Every run of `size` words (or non-space characters) in `text`."""
    items = re.findall(r"\w+", text.lower()) if words else [c for c in text if not c.isspace()]
    return frozenset(tuple(items[i:i + size]) for i in range(len(items) - size + 1))
