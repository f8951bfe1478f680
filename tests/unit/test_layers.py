"""The layers hold: which package may import what, read from the source (no imports run).

front ends -> runtime -> service -> engine/core; the trainer uses the core only; only the
Discord front end imports discord; the engine knows neither Redis nor Discord.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from paths import REPO


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_under(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def offenders(folder: str, forbidden: tuple[str, ...], *, skip: str | None = None) -> dict:
    """Files under `folder` (except those under `skip`) importing a module in `forbidden`
    (the module itself or anything inside it)."""
    found = {}
    for path in modules_under(folder):
        if skip and path.is_relative_to(REPO / skip):
            continue
        bad = {name for name in imported_modules(path)
               if any(name == f or name.startswith(f + ".") for f in forbidden)}
        if bad:
            found[str(path.relative_to(REPO))] = sorted(bad)
    return found


def test_only_the_discord_front_end_imports_discord():
    assert offenders("bot", ("discord",), skip="bot/frontends/discord") == {}
    assert offenders("trainer", ("discord",)) == {}


def test_the_engine_knows_neither_redis_nor_discord_nor_the_layers_above():
    assert offenders("bot/engine", ("redis", "discord", "bot.service", "bot.frontends",
                                    "bot.runtime", "bot.core.store")) == {}


def test_the_core_depends_on_nothing_above_it():
    assert offenders("bot/core", ("bot.engine", "bot.service", "bot.frontends",
                                  "bot.runtime", "discord", "trainer")) == {}


def test_the_service_layer_knows_no_front_end_and_no_engine():
    assert offenders("bot/service", ("bot.engine", "bot.frontends", "discord")) == {}


def test_the_trainer_uses_only_the_core_of_the_bot():
    """The demo is apart: it runs the whole bot through the console twin."""
    assert offenders("trainer", ("bot.engine", "bot.service", "bot.frontends", "bot.runtime"),
                     skip="trainer/demo") == {}


def test_only_the_fleet_imports_ray():
    """The embedded default (the local engine: `make demo`, the console, a one-box install)
    needs no Ray; bot/runtime.py reaches bot/fleet only for GENERATOR=ray."""
    assert offenders("bot", ("ray",), skip="bot/fleet") == {}
    assert offenders("trainer", ("ray",)) == {}
    assert offenders("bot/engine", ("bot.fleet",)) == {}


def test_the_bot_never_imports_the_trainer():
    assert offenders("bot", ("trainer",)) == {}


@pytest.mark.parametrize("folder", ["bot/engine", "bot/core", "bot/service", "bot/frontends"])
def test_each_layer_is_a_package(folder):
    assert (REPO / folder / "__init__.py").is_file()
