"""A canary end to end on the tiny model: a promotion with CANARY_SHARE=0.5 makes the candidate
the canary, new console conversations are answered by both versions (rows of both share decode
steps), and moderators' 👎 on the canary's replies and 👍 on the active's roll it back with no
admin's act: the trainer's scheduled judge decides, the console hears it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from store_util import TENANT

from bot.core.dialogue import Turn
from bot.core.generation import BASE_VERSION
from bot.core.store import AdapterRecord
from bot.frontends.console import Console
from bot.runtime import Runtime
from bot.service.follow import serves_canary
from trainer.publish import publish
from trainer.schedule import TrainerService


async def until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def promoted_twice(settings, own, blobs) -> tuple[str, str]:
    """v1 promoted at once (no canary then), v2 promoted under `settings`' CANARY_SHARE."""
    record = AdapterRecord(parent=BASE_VERSION, base_model=settings.model_name)
    v1 = (await publish(own.registry, record, blobs["v1"], {}, None, canaries=own.canary,
                        share=0.0)).version
    v2 = (await publish(own.registry, record.model_copy(update={"parent": v1}), blobs["v2"],
                        {"reason": "better chrF"}, None, canaries=own.canary,
                        share=settings.canary_share)).version
    return v1, v2


async def test_the_console_canary_is_rolled_back_by_its_ratings(fast, store, engine, blobs):
    settings = fast.model_copy(update={"canary_share": 0.5, "canary_min_ratings": 8})
    own = store.tenant(TENANT)
    async with Runtime(settings, store=store, generator=engine) as runtime:
        heard = []

        async def hear(event, record) -> None:
            heard.append(event)

        runtime.on_change(hear)
        console, router = Console(runtime), runtime.router
        v1, v2 = await promoted_twice(settings, own, blobs)
        await until(lambda: router.canary(TENANT) is not None and router.own_version(TENANT)
                    == v1)
        assert await own.registry.active() == v1

        served = Counter()
        for n in range(40):
            await console.handle_line("/new")
            answer = await console.handle_line(f"question number {n}")
            version = console.last.adapter_version
            assert answer.startswith(f"bot [{version}]: ")
            served[version] += 1
            await console.handle_line("/rate down" if version == v2 else "/rate up")
        assert served[v1] >= 8 and served[v2] >= 8, served

        status = await console.handle_line("/adapter status")
        assert f"Canary: {v2} answers 50% of new conversations, {v1} the rest" in status
        assert "Live test (rollback now): worse than the active adapter" in status

        verdicts = await TrainerService(settings, store).judge_canaries()
        assert verdicts[TENANT].action == "rollback"
        await until(lambda: router.canary(TENANT) is None)
        assert await own.registry.active() == v1
        assert [e.reason for e in heard if e.kind == "canary"] == ["started", "rolled back"]
        for n in range(5):
            await console.handle_line("/new")
            await console.handle_line(f"after the canary {n}")
            assert console.last.adapter_version == v1


async def test_both_versions_share_decode_steps(fast, store, engine, blobs):
    settings = fast.model_copy(update={"canary_share": 0.5, "max_new_tokens": 24})
    own = store.tenant(TENANT)
    async with Runtime(settings, store=store, generator=engine) as runtime:
        v1, v2 = await promoted_twice(settings, own, blobs)
        await until(lambda: runtime.router.canary(TENANT) is not None)
        ids = [f"chat-{n}" for n in range(12)]
        assert {serves_canary(c, v2, 0.5) for c in ids} == {True, False}
        forward, steps = engine.kv._forward, []

        def spy(names, **inputs):
            steps.append(set(names))
            return forward(names, **inputs)

        engine.kv._forward = spy
        try:
            async def draft(conversation: str):
                stream = await runtime.conversation.stream_draft(
                    [Turn("user", f"hello from {conversation}")], guild_id=TENANT,
                    channel_id=0, conversation=conversation)
                async for _ in stream:
                    pass
                return stream.draft.generation.adapter_version

            versions = await asyncio.gather(*(draft(c) for c in ids))
        finally:
            engine.kv._forward = forward
        assert versions == [v2 if serves_canary(c, v2, 0.5) else v1 for c in ids]
        # Only v1 and v2 answer here: two adapter names in one step are both versions.
        assert any(len(names) == 2 for names in steps), steps
