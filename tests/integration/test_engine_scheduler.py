"""Iteration-level scheduling and streaming on the tiny GPT-2: late requests join running ones,
greedy replies equal transformers' `generate`, streamed pieces are the reply, swaps fail none."""

from __future__ import annotations

import asyncio

import pytest
import torch
from engine_util import (
    blob_source,
    collect,
    engine_settings,
    running_engine,
    slow_down,
    stream_across_swaps,
)

from bot.core.dialogue import Turn, extract_reply
from bot.engine.engine import Engine

HELLO = [Turn("user", "hello, how are you?")]
PROMPTS = ["hi", "what is the weather like today in the mountains?", "tell me " * 30 + "more",
           "你好，今天天气怎么样？", "a b c d e f g", "why " * 60]


REPLY_TOKENS = 24  # long enough that a late request joins rows still running


@pytest.fixture
async def engine(settings, blobs):
    async with running_engine(engine_settings(settings, max_new_tokens=REPLY_TOKENS),
                              blobs) as engine:
        yield engine


def hf_reply(engine: Engine, text: str, max_new_tokens: int) -> str:
    """transformers' own greedy `generate` for the prompt alone, cut like the engine's reply."""
    prompt = engine._encode_prompt([Turn("user", text)], None,
                                   engine.n_positions - max_new_tokens)[1]
    model = engine.model.base_model.model
    with torch.inference_mode():
        output = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                dtype=torch.long), max_new_tokens=max_new_tokens,
                                do_sample=False, repetition_penalty=1.2,
                                pad_token_id=engine.eos_token_id, eos_token_id=engine.eos_token_id)
    row = output[0, len(prompt):].tolist()
    if engine.eos_token_id in row:
        row = row[:row.index(engine.eos_token_id)]
    # `decode` marks bytes that are no whole character with U+FFFD; the engine leaves them out.
    return extract_reply(engine.tokenizer.decode(row).replace("\ufffd", ""),
                         engine.tokenizer.eos_token)


async def test_a_request_arriving_mid_generation_starts_before_the_running_ones_finish(engine):
    hook = slow_down(engine, 0.01)
    try:
        steps_at = {}

        async def run(name: str, text: str, max_new_tokens: int):
            async for _ in engine.stream([Turn("user", text)], max_new_tokens=max_new_tokens,
                                         min_new_tokens=max_new_tokens):
                steps_at.setdefault(f"{name} first", engine.decode_steps)
            steps_at[f"{name} done"] = engine.decode_steps

        early = [asyncio.create_task(run(f"early{i}", f"long story {i}", 60)) for i in range(3)]
        while engine.decode_steps < 5:
            await asyncio.sleep(0.005)
        late_sent = engine.decode_steps
        await run("late", "a late question", 5)
        await asyncio.gather(*early)
    finally:
        hook.remove()
    # The late one streamed early on and finished while the early ones (60 tokens each),
    # started before it, were still decoding: it did not wait for their batch to end.
    assert late_sent >= 5 and steps_at["late first"] < 30, steps_at
    assert all(steps_at["late done"] < steps_at[f"early{i} done"] for i in range(3)), steps_at


async def test_greedy_replies_equal_transformers_generate_also_when_joining_mid_run(engine):
    hook = slow_down(engine, 0.002)
    try:
        async def arrive(index: int, text: str):
            await asyncio.sleep(0.02 * index)  # staggered: most join a batch already running
            return (await engine.generate([Turn("user", text)])).text

        calls = engine.admissions
        served = await asyncio.gather(*(arrive(i, t) for i, t in enumerate(PROMPTS)))
        assert engine.admissions - calls > 1  # they did not all start together
    finally:
        hook.remove()
    expected = [hf_reply(engine, text, REPLY_TOKENS) for text in PROMPTS]
    assert served == expected
    assert len(set(expected)) > 1  # different prompts, different replies: the check can fail


async def test_streamed_pieces_join_to_the_reply_and_never_split_a_character(engine):
    texts = ["你好，世界！" * 3, "hello there", "天气怎么样？" * 5, "why " * 20]
    streams = [engine.stream([Turn("user", t)], max_new_tokens=40) for t in texts]
    all_pieces = await asyncio.gather(*(collect(s) for s in streams))
    multi = 0
    for stream, pieces in zip(streams, all_pieces, strict=True):
        assert "".join(pieces) == stream.generation.text
        assert not any("\ufffd" in piece for piece in pieces)
        assert all(piece for piece in pieces)
        multi += len(pieces) > 1
    assert multi >= 2, all_pieces  # pieces arrive as they are decoded, not as one block


async def test_a_caller_that_stops_listening_frees_its_row(engine):
    stream = engine.stream([Turn("user", "tell me everything")], max_new_tokens=200,
                           min_new_tokens=200)
    async for _ in stream:
        break  # the front end gave up after the first piece
    await asyncio.sleep(0.2)
    assert engine._scheduler.running == []
    assert (await engine.generate(HELLO)).text  # the engine goes on serving


async def test_mixed_adapters_in_one_step_give_each_adapter_alone_output(engine):
    for version in ("v1", "v2"):
        await engine.load(version)
    requests = [(PROMPTS[i % len(PROMPTS)], version)
                for i, version in enumerate(["v1", "base", "v2", "v1", "v2", "base"])]
    alone = [(await engine.generate([Turn("user", t)], adapter=v)).text for t, v in requests]
    assert len(set(alone)) > 2, alone
    hook = slow_down(engine, 0.002)
    forward, steps = engine.kv._forward, []

    def spy(names, **inputs):
        steps.append((inputs["input_ids"].shape[1], set(names)))
        return forward(names, **inputs)

    engine.kv._forward = spy
    try:
        async def arrive(index, text, version):
            await asyncio.sleep(0.015 * index)  # rows of three versions share decode steps
            return await engine.generate([Turn("user", text)], adapter=version)

        mixed = await asyncio.gather(*(arrive(i, t, v) for i, (t, v) in enumerate(requests)))
    finally:
        hook.remove()
        engine.kv._forward = forward
    # Some decode step (one new token per row) ran the base and both adapters together.
    assert any(width == 1 and len(names) == 3 for width, names in steps)
    assert [r.text for r in mixed] == alone
    assert [r.adapter_version for r in mixed] == [v for _, v in requests]


async def test_loads_and_swaps_mid_stream_fail_nothing_and_versions_are_true(engine):
    alone = {}
    for version in ("v1", "v2", "base"):
        if version != "base":
            await engine.load(version)
        alone[version] = (await engine.generate(HELLO, adapter=version)).text
    assert len(set(alone.values())) == 3
    # Room for one adapter: loads evict, and evicted versions come back on demand, while
    # rows stream.
    engine._adapters.capacity = 1
    results = await stream_across_swaps(engine, HELLO)
    seen = set()
    for pieces, generation in results:
        assert "".join(pieces) == generation.text == alone[generation.adapter_version]
        seen.add(generation.adapter_version)
    assert len(seen) >= 2, seen


async def test_a_bfloat16_engine_serves_and_streams(settings, blobs):
    engine = Engine.from_settings(engine_settings(settings, max_new_tokens=REPLY_TOKENS,
                                                 model_dtype="bfloat16"), blob_source(blobs))
    try:
        assert next(engine.model.parameters()).dtype == torch.bfloat16
        await engine.load("v1")
        streams = [engine.stream([Turn("user", t)], adapter=v)
                   for t, v in zip(PROMPTS, ["base", "v1"] * 3, strict=True)]
        for stream, pieces in zip(streams, await asyncio.gather(*map(collect, streams)),
                                  strict=True):
            assert "".join(pieces) == stream.generation.text
    finally:
        await engine.close()


async def test_replies_of_one_token_at_the_longest_prompt_stay_within_the_positions(engine):
    # A newcomer decodes once more in the tick that prefills it; with the longest prompt and
    # one new token that step sits on the model's last position, never past it. (Real prompts
    # fall a token or two short of the budget: a prompt of exactly the budget is forced.)
    filler = engine.tokenizer.encode(" word", add_special_tokens=False)[0]
    engine._encode_prompt = lambda turns, style, budget: ("(forced)", [filler] * budget)
    results = await asyncio.gather(*(engine.generate(HELLO, max_new_tokens=1)
                                     for _ in range(3)))
    for result in results:
        assert (result.prompt_tokens, result.reply_tokens) == (engine.n_positions - 1, 1)
