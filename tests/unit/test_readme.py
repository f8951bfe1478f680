"""The README stays true to the code: its settings table and its commands."""

from __future__ import annotations

import re

from paths import REPO

from bot.core.config import Settings

README = (REPO / "README.md").read_text()


def test_settings_table_names_every_setting_and_no_other():
    in_table = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.MULTILINE))
    assert in_table == {name.upper() for name in Settings.model_fields}


def test_quick_start_gives_the_two_commands():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^\| `(make \w+)` \|", quick_start, flags=re.MULTILINE) == [
        "make demo", "make test"]
