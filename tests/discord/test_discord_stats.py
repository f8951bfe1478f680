"""/stats: acknowledged within Discord's 3 s however slow the store, read from counters, and
always within 2,000 characters."""

from __future__ import annotations

import discord.ext.test as dpytest
from discord_helpers import FakeClock, RecordingAdapter, member, slash_as
from store_util import raw_redis

from bot.core.store.exchanges import Exchanges


async def test_stats_defers_so_a_slow_read_is_still_answered(bot, store, own, monkeypatch):
    clock = FakeClock()
    read = Exchanges.stats

    async def slow_stats(self):
        clock.advance(5.0)  # the counters took 5 s to read: past Discord's 3 s window
        return await read(self)

    monkeypatch.setattr(Exchanges, "stats", slow_stats)
    recorder = RecordingAdapter(clock=clock)

    shown = await slash_as(bot, member("mod"), dpytest.get_config().channels[0], "stats",
                           recorder=recorder)

    assert recorder.refused == []
    assert shown["calls"][0][2]["type"] == 5  # "thinking..." first, within the window
    assert shown["content"].startswith("Exchanges 0, rated 0") and shown["ephemeral"]


async def test_stats_fit_2000_characters_with_60_adapter_versions(bot, store, own):
    counters = {}
    for n in range(1, 61):
        counters |= {f"v{n}:exchanges": 1000 + n, f"v{n}:rated": 100 + n, f"v{n}:positive": n}
    await raw_redis(store).hset(own.exchanges.keys.stats, mapping={"exchanges": 61_830, **counters})
    await raw_redis(store).set(own.registry.keys.active, "v7")  # rolled back to an old one

    shown = await slash_as(bot, member("mod"), dpytest.get_config().channels[0], "stats")

    text = shown["content"]
    assert len(text) <= 2000
    lines = text.splitlines()
    assert lines[0].startswith("Exchanges 61830, rated 7830, positive share 23%")
    assert lines[1] == "  v7 (in service): exchanges 1007, rated 107, positive 7%"
    assert lines[2].startswith("  v60: exchanges 1060") and lines[3].startswith("  v59:")
    shown_versions = len(lines) - 3
    left = 60 - 1 - shown_versions
    assert lines[-1].startswith(f"  ... and {left} older versions: exchanges ")
    older = [n for n in range(1, 61) if n != 7][:left]
    assert f"exchanges {sum(1000 + n for n in older)}, rated {sum(100 + n for n in older)}" \
        in lines[-1]
