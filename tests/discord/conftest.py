"""The dpytest bot every Discord test drives: the real client on the tiny model and real Redis
(`bot`), or on a FakeGenerator whose replies the test scripts (`scripted_bot`).

Members (see discord_helpers.make_bot): alice and bob are plain members; "mod" has the
moderator role; "admin" has a role with Manage Server. ADMIN_ROLE is "Bot Admin" (no one has it
until a test gives it).
"""

from __future__ import annotations

import discord.ext.test as dpytest
import pytest
from discord_helpers import cleanup, make_bot, make_role, member


@pytest.fixture
def fast(settings):
    return settings.model_copy(update={"max_new_tokens": 8, "cooldown_seconds": 0,
                                       "admin_role": "Bot Admin"})


async def staffed_bot(settings, runtime):
    """make_bot with an admin (Manage Server) and a moderator."""
    bot = await make_bot(runtime)
    guild = dpytest.get_config().guilds[0]
    await dpytest.add_role(member("admin"), make_role(guild, "Staff", manage_guild=True))
    await dpytest.add_role(member("mod"), make_role(guild, settings.moderator_role))
    return bot


@pytest.fixture
async def bot(fast, runtime):
    bot = await staffed_bot(fast, runtime)
    yield bot
    await cleanup(bot)


@pytest.fixture
async def scripted_bot(fast, fake_runtime):
    """The bot on a FakeGenerator: `scripted_bot.runtime.generator.script(pieces, ...)`."""
    bot = await staffed_bot(fast, fake_runtime)
    yield bot
    await cleanup(bot)


@pytest.fixture
def channel():
    return dpytest.get_config().channels[0]


@pytest.fixture
def own(bot, store):
    """What the dpytest server owns in the store (its guild id is the tenant)."""
    return store.tenant(dpytest.get_config().guilds[0].id)
