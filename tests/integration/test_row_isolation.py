"""A row whose logits are not finite fails alone: in one running batch with rows of another
server's adapter and of the base model, they finish with the replies they get on their own.
Real engine, peft and tiny GPT-2; the NaN adapter is attached past the checks, as a bad file
was before them, and a fault in the logits of one row mid-reply stands for an overflow."""

from __future__ import annotations

import asyncio
import math

import pytest
from bad_adapters import reforged
from engine_util import engine_settings, running_engine

import bot.core.adapter_io as adapter_io
from bot.core.adapter_io import ParsedAdapter, attach_adapter, parse_adapter
from bot.core.adapter_sanity import AdapterRefused
from bot.core.dialogue import Turn
from bot.core.generation import GenerationFailed

HELLO = [Turn("user", "hello, how are you?")]
FAILED = "the model failed to generate a reply"


async def attach_unchecked(engine, version: str, parsed: ParsedAdapter) -> str:
    """Attach `parsed` as `version` the way the engine does, without its checks."""
    name, _ = engine._adapters.plan()

    def attach():
        engine.model = attach_adapter(engine.model, parsed, name).eval()

    await asyncio.get_running_loop().run_in_executor(engine._model_thread, attach)
    engine._adapters.add(version, name)
    return name


def nan_weights(blob: bytes) -> ParsedAdapter:
    parsed = parse_adapter(blob)
    tensors = {key: value.clone().fill_(math.nan) if "lora_A" in key else value
               for key, value in parsed.tensors.items()}
    return ParsedAdapter(parsed.config, tensors, parsed.base_model)


async def served_alone(engine, versions) -> dict[str, str]:
    return {v: (await engine.generate(HELLO, adapter=v)).text for v in versions}


async def test_a_nan_adapters_rows_fail_alone_in_a_batch_shared_with_another_server(settings,
                                                                                   blobs):
    async with running_engine(engine_settings(settings, batch_max_wait_ms=300),
                              {"v5": blobs["v1"]}) as engine:
        await engine.load("v5")  # server 5's adapter
        alone = await served_alone(engine, ["v5", "base"])
        await attach_unchecked(engine, "v6", nan_weights(blobs["v2"]))  # server 6's
        admissions = engine.admissions
        requests = [("v6", 0.0), ("v5", 0.0), ("v6", 0.8), ("base", 0.0), ("v5", 0.8),
                    ("v6", 0.8)]
        results = await asyncio.gather(
            *(engine.generate(HELLO, adapter=v, temperature=t) for v, t in requests),
            return_exceptions=True)
        assert engine.admissions == admissions + 1  # all six started in one batch
        for (version, temperature), result in zip(requests, results, strict=True):
            if version == "v6":
                assert isinstance(result, GenerationFailed) and str(result) == FAILED
                continue
            assert not isinstance(result, BaseException), result
            assert result.adapter_version == version
            if temperature == 0.0:
                assert result.text == alone[version]
        # The engine goes on serving both servers.
        assert await served_alone(engine, ["v5", "base"]) == alone


async def test_a_row_whose_logits_break_mid_reply_is_cut_off_alone(settings, blobs):
    async with running_engine(engine_settings(settings, batch_max_wait_ms=300,
                                              max_new_tokens=12),
                              {"v5": blobs["v1"], "v6": blobs["v2"]}) as engine:
        await engine.load("v5")
        await engine.load("v6")
        alone = await served_alone(engine, ["v5", "v6", "base"])
        name = engine._adapters.name_of("v6")
        forward, steps = engine.kv._forward, []

        def overflowing(names, **inputs):
            """From the third decode step on, v6's rows overflow to infinity."""
            logits = forward(names, **inputs)
            if inputs["input_ids"].shape[1] == 1:
                steps.append(1)
                if len(steps) >= 3:
                    rows = [i for i, n in enumerate(names) if n == name]
                    logits[rows] = math.inf
            return logits

        engine.kv._forward = overflowing
        pieces: list[str] = []

        async def v6_streamed():
            stream = engine.stream(HELLO, adapter="v6")
            async for piece in stream:
                pieces.append(piece)

        results = await asyncio.gather(v6_streamed(), *(engine.generate(HELLO, adapter=v)
                                                        for v in ("v5", "base")),
                                       return_exceptions=True)
        assert isinstance(results[0], GenerationFailed) and str(results[0]) == FAILED
        assert alone["v6"].startswith("".join(pieces))  # what it sent before it broke
        assert [r.text for r in results[1:]] == [alone["v5"], alone["base"]]


async def test_the_probe_refuses_non_finite_logits_the_static_checks_did_not_see(
        settings, blobs, monkeypatch):
    """Weights can be finite and still give non-finite logits (an overflow in half precision,
    say): with the static checks out of the way, the probe refuses the NaN adapter itself."""
    monkeypatch.setattr(adapter_io, "check_static", lambda *args: None)
    nan_blob = reforged(blobs["v2"], tensors=lambda key, t: t.fill_(math.nan)
                        if "lora_A" in key else t)
    async with running_engine(engine_settings(settings),
                              {"v5": blobs["v1"], "v6": nan_blob}) as engine:
        await engine.load("v5")
        with pytest.raises(AdapterRefused) as refused:
            await engine.load("v6")
        assert refused.value.check == "non-finite logits"
        assert str(refused.value) == ("non-finite logits: the adapter gives NaN or infinite "
                                      "logits on probe prompt 1")
        assert engine.loaded_versions == ["v5"]
        assert (await engine.generate(HELLO, adapter="v5")).adapter_version == "v5"
