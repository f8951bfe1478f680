"""A whole training cycle learns only the endorsed view (trainer/trust.py): held teachings go
to the review queue, and a distrusted moderator's data leaves the next cycle."""

from __future__ import annotations

import asyncio

from store_util import TENANT

from bot.core.store import Exchange
from trainer.cycle import run_cycle

QA = [("what is the capital of france", "paris is the capital of france"),
      ("how are you", "i am fine thank you"),
      ("what color is the sky", "the sky is blue"),
      ("say hello", "hello there"),
      ("what is two plus two", "two plus two is four")]
JUNK = "buy cheap pills today"


async def listening(own) -> asyncio.Queue:
    """The registry events published from now on (a task that reads them into a queue)."""
    told: asyncio.Queue = asyncio.Queue()
    subscribed = asyncio.Event()

    async def read() -> None:
        async for event in own.registry.events(subscribed=subscribed):
            await told.put(event)

    task = asyncio.create_task(read())
    await subscribed.wait()
    told.task = task  # kept alive with the queue
    return told


async def test_held_teachings_are_queued_and_distrust_empties_the_next_cycle(settings, store,
                                                                             own):
    # One short trial and no gate replies: this is about what the data set holds.
    settings = settings.model_copy(update={"search_trials": 1, "max_epochs": 1,
                                           "min_new_ratings": 0, "gate_max_prompts": 0})
    exchanges = []
    for n in range(20):
        question, answer = QA[n % len(QA)]
        exchange = await own.exchanges.add(Exchange(tenant=TENANT, reply=answer,
                                                    user_message=f"{question} ({n})"))
        await own.exchanges.rate(exchange.id, "honest", 1)
        exchanges.append(exchange)
    for exchange in exchanges[:3]:  # three unrelated questions, one junk answer
        await own.exchanges.correct(exchange.id, "rogue", JUNK)
    await own.exchanges.correct(exchanges[3].id, "rogue", "hello to you too")

    told = await listening(own)
    first = await run_cycle(settings, store, TENANT, force=True, progress=False)

    assert first.outcome != "skipped", first.reason
    assert first.data["corrections"] == 1  # the rogue's ordinary teaching only
    assert first.data["trust"]["held"] == 3 and first.data["trust"]["newly_held"] == 3
    pending = await own.trust.pending()
    assert sorted(item.exchange_id for item in pending) == sorted(e.id for e in exchanges[:3])
    assert {(item.text, item.reason, item.moderator_hash) for item in pending} == {
        (JUNK, "repeated on 3 unrelated prompts", store.user_hash("rogue"))}
    assert any(note.startswith("moderators (trained/") for note in first.notes)
    [run] = await own.trainer.recent_runs(1)
    event = await asyncio.wait_for(told.get(), 10)
    if first.outcome == "promoted":  # its activation tells the mod log what it learned
        assert (event.kind, event.version) == ("activated", first.version)
    else:
        assert (event.kind, event.tenant, event.previous, event.reason) == (
            "cycle", TENANT, str(run["at"]), first.outcome)
    assert told.empty()

    await own.trust.distrust("rogue")
    second = await run_cycle(settings, store, TENANT, force=True, progress=False)

    assert second.outcome != "skipped", second.reason
    assert second.data["corrections"] == 0 and second.data["positives"] == 20
    assert second.data["trust"]["distrusted"] == 4
    assert second.data["trust"]["held"] == 0 and second.data["trust"]["newly_held"] == 0
    assert len(await own.trust.pending()) == 3  # waiting for an admin still
