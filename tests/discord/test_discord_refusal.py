"""A refused adapter is posted to the server's mod log in the words of /adapter status, and
the version before it keeps answering in Discord (dpytest, real Redis, engine and checks)."""

from __future__ import annotations

import asyncio
import math

import discord.ext.test as dpytest
from adapters_util import make_adapter_bytes
from bad_adapters import reforged
from discord_helpers import cleanup, make_bot, sent_messages

from bot.core.store import AdapterRecord
from bot.runtime import Runtime


async def test_a_refused_adapter_is_posted_to_the_modlog_and_the_one_before_answers(
        fast, store, engine, tiny_model_dir):
    good_blob = make_adapter_bytes(tiny_model_dir, fast)
    nan_blob = reforged(good_blob, tensors=lambda key, t: t.fill_(math.nan)
                        if key.endswith("h.1.attn.c_attn.lora_B.weight") else t)
    async with Runtime(fast, store=store, generator=engine) as runtime:
        bot = await make_bot(runtime)
        channel = dpytest.get_config().channels[0]
        own = store.tenant(channel.guild.id)
        await own.set_modlog_channel(channel.id)
        runtime.on_change(bot.modlog.announce)
        good = await own.registry.save(AdapterRecord(base_model=fast.model_name), good_blob)
        await own.registry.activate(good.version)
        await asyncio.sleep(0.2)  # the follower subscribes at start-up
        async with asyncio.timeout(20):
            while dpytest.sent_queue.empty():  # the post of that change
                await asyncio.sleep(0.05)
        assert runtime.router.version_for(own.tenant) == good.version
        await dpytest.empty_queue()
        bad = await own.registry.save(AdapterRecord(base_model=fast.model_name), nan_blob)
        await own.registry.activate(bad.version)
        async with asyncio.timeout(20):
            while dpytest.sent_queue.empty():
                await asyncio.sleep(0.05)
        [post] = await sent_messages()
        assert post.channel.id == channel.id
        assert post.content == (f"Adapter {bad.version} refused: non-finite weights; serving "
                                f"{good.version}")

        await dpytest.message(f"{bot.user.mention} hello")
        [reply] = await sent_messages()
        assert reply.content
        exchange = await store.exchanges.for_message(reply.id)
        assert exchange.adapter_version == good.version
        await cleanup(bot)
