"""Benchmark: the engine against the seed approach (one request at a time), on the same model in
the same run. (bench/serve.py compares the engine with static batching.)

    .venv/bin/python bench/generate.py [--model DIR_OR_NAME] [--device cpu] [--concurrency 16]
                                       [--max-new-tokens 64] [--quick]

Without --model the model is the GPT-2 small architecture (GPT2Config(): 124M parameters,
vocabulary 50257) with random weights, built here (nothing is downloaded); the tokenizer is the
tiny offline one (its ids are a subset of the model's; decoding is beside the point for speed).

- engine:   --concurrency requests of mixed prompt lengths sent at once to
            `bot.engine.engine.Engine`;
            latency of each from the common start until its reply.
- baseline: the seed approach: the same prompts, one `model.generate` call per request, one
            after another, on the same model. Latency is measured from the same common start
            (request i waits for the i-1 before it, as requests queued behind a sequential
            server do).
Both sides generate exactly --max-new-tokens tokens per request (min_new_tokens = max) with the
bot's sampling settings, so tokens/s compare fairly.

- swap under load: a wave of requests, an adapter swap while its batch runs, a second wave
  sent during the swap, a short third one after it. Reports the swap time under load (the
  call until the new adapter is in service: it is attached between decode steps), the swap
  time when idle (the load itself), which version served how many requests, and failures.

- mixed adapters: the same requests on one adapter, then spread over --adapters adapters (one
  decode step mixes them through peft's adapter_names); mixed_ratio = mixed tokens/s / single.

The last line reads `throughput_ratio=R p95_engine_ms=A p50_baseline_ms=B failed_during_swap=N
mixed_ratio=M`.
--quick: 8 requests of 8 new tokens, for a smoke test (< 60 s on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RANDOM_MODEL_NAME = "gpt2-small-architecture-random-weights"
# Prompt lengths in tokens of the user's message: short chat messages with a few long ones.
MESSAGE_TOKENS = (6, 12, 20, 32, 8, 48, 16, 64)
# The adapters a run makes, by version: the engine's adapter source loads them by name.
MADE_ADAPTERS: dict[str, bytes] = {}


async def made_adapter(version: str) -> bytes:
    return MADE_ADAPTERS[version]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (p50 of 16 values is the 8th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="hub name or local directory (default: GPT-2 small "
                                        "architecture with random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=4,
                        help="how many adapters the mixed-adapter run spreads requests over")
    parser.add_argument("--quick", action="store_true", help="8 requests, 8 new tokens")
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.max_new_tokens = 8, 8
    return args


def build_engine(args, workdir: Path):
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from bot.core.config import load_settings
    from bot.core.generation import GenerationConfig
    from bot.engine.engine import Engine
    from trainer.demo.tiny_model import build_tiny_model

    common = dict(device=args.device, max_new_tokens=args.max_new_tokens,
                  batch_max_size=max(args.concurrency, 1), queue_max=4 * args.concurrency,
                  _env_file=None)
    if args.model:
        return Engine.from_settings(load_settings(model_name=args.model, **common), made_adapter)
    settings = load_settings(model_name=RANDOM_MODEL_NAME, **common)
    tokenizer = AutoTokenizer.from_pretrained(str(build_tiny_model(workdir / "tokenizer")))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())
    device = settings.resolved_device()
    if device.startswith("cuda"):
        model = model.to(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return Engine(model.to(device), tokenizer, GenerationConfig.from_settings(settings),
                  made_adapter)


def dialogues(tokenizer, count: int):
    """`count` one- or three-turn dialogues whose newest message has a mixed token length."""
    from bot.core.dialogue import Turn
    from trainer.demo.tiny_model import corpus_text

    words = " ".join(corpus_text().split()).split(" ")
    result = []
    for i in range(count):
        want = MESSAGE_TOKENS[i % len(MESSAGE_TOKENS)]
        start = (i * 37) % max(1, len(words) - 200)
        message = ""
        for word in words[start:start + 400]:
            candidate = f"{message} {word}".strip()
            if len(tokenizer.encode(candidate, add_special_tokens=False)) > want:
                break
            message = candidate
        history = [Turn("user", "hi there"), Turn("bot", "hello! how can I help?")]
        result.append([*history, Turn("user", message)] if i % 3 == 0 else
                      [Turn("user", message)])
    return result


async def run_engine(engine, convos, sampling) -> tuple[float, list[float], list]:
    started = time.perf_counter()
    results = await asyncio.gather(*(engine.generate(c, **sampling) for c in convos))
    wall = time.perf_counter() - started
    return wall, [r.latency_ms for r in results], results


def run_baseline(engine, prompts: list[str], sampling: dict) -> tuple[float, list[float], int]:
    """The seed approach: one model.generate per request, one after another."""
    import torch

    from bot.core.dialogue import extract_reply

    model = engine.model.base_model.model  # the same weights (no adapter is loaded yet)
    tok = engine.tokenizer
    kwargs = dict(max_new_tokens=sampling["max_new_tokens"],
                  min_new_tokens=sampling["min_new_tokens"], do_sample=True,
                  temperature=engine.default_sampling.temperature,
                  top_p=engine.default_sampling.top_p,
                  repetition_penalty=engine.default_sampling.repetition_penalty,
                  pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    started = time.perf_counter()
    latencies, tokens = [], 0
    for prompt in prompts:
        ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)], device=engine.device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        new = out[0, ids.shape[1]:].tolist()
        tokens += len(new)
        extract_reply(tok.decode(new), tok.eos_token)
        latencies.append((time.perf_counter() - started) * 1000)
    return time.perf_counter() - started, latencies, tokens


def adapter_blob(engine, seed: int = 1) -> bytes:
    """A LoRA adapter (non-zero weights) for the engine's architecture, built on a meta copy so
    no second set of base weights is initialised."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from bot.core.adapter_io import lora_config, serialize_adapter
    from bot.core.config import load_settings

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(engine.model.base_model.model.config)
    peft_model = get_peft_model(skeleton, lora_config(load_settings(_env_file=None)),
                                adapter_name="bench")
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, param in peft_model.named_parameters():
        if ".lora_A.bench." in name or ".lora_B.bench." in name:
            state[name] = torch.randn(param.shape, generator=generator) * 0.02
    peft_model = peft_model.to_empty(device="cpu")
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if name in state:
                param.copy_(state[name])
    return serialize_adapter(peft_model, "bench", engine.model_name)


async def swap_under_load(engine, convos, sampling, blob: bytes) -> dict:
    """Wave 1 on the base model, a new adapter loaded while its batch runs, wave 2 sent during
    the load (still on the base, as a server's table moves only once its new version is
    loaded), a short wave 3 on the new version after it; counts what failed and which version
    served each."""
    async def send(convo, adapter):
        try:
            return await engine.generate(convo, adapter=adapter, **sampling)
        except Exception as error:  # counted and shown, never hidden
            return error

    MADE_ADAPTERS["bench-idle"] = MADE_ADAPTERS["bench-v1"] = blob
    idle_start = time.perf_counter()
    await engine.load("bench-idle")
    idle_ms = (time.perf_counter() - idle_start) * 1000

    wave1 = [asyncio.create_task(send(c, "base")) for c in convos]
    await asyncio.sleep(0.2)  # the first batch is on the model thread now
    swap_start = time.perf_counter()
    swap = asyncio.create_task(engine.load("bench-v1"))
    await asyncio.sleep(0)
    wave2 = [asyncio.create_task(send(c, "base")) for c in convos]
    await swap
    swap_ms = (time.perf_counter() - swap_start) * 1000
    wave3 = [asyncio.create_task(send(c, "bench-v1"))
             for c in convos[: max(1, len(convos) // 4)]]
    outcomes = await asyncio.gather(*wave1, *wave2, *wave3)
    failed = [o for o in outcomes if isinstance(o, Exception)]
    served = {}
    for o in outcomes:
        if not isinstance(o, Exception):
            served[o.adapter_version] = served.get(o.adapter_version, 0) + 1
    return {"swap_ms": swap_ms, "idle_ms": idle_ms, "failed": failed, "served": served,
            "requests": len(outcomes)}


async def mixed_adapters(engine, convos, sampling, count: int) -> dict:
    """Tokens/s of the same requests served by one adapter, then spread over `count` adapters
    (round robin: one batch mixes them), in the same run."""
    names = [f"bench-mix-{n}" for n in range(count)]
    for seed, name in enumerate(names, start=10):
        MADE_ADAPTERS[name] = adapter_blob(engine, seed=seed)
        await engine.load(name)
    figures = {}
    for label, adapters in (("single", [names[0]] * len(convos)),
                            ("mixed", [names[i % count] for i in range(len(convos))])):
        calls = engine.admissions
        started = time.perf_counter()
        results = await asyncio.gather(*(engine.generate(c, adapter=a, **sampling)
                                         for c, a in zip(convos, adapters, strict=True)))
        wall = time.perf_counter() - started
        figures[label] = {"tokens_per_s": sum(r.reply_tokens for r in results) / wall,
                          "calls": engine.admissions - calls,
                          "versions": len({r.adapter_version for r in results})}
    figures["ratio"] = figures["mixed"]["tokens_per_s"] / figures["single"]["tokens_per_s"]
    return figures


def print_setup(engine, args, convos, prompts: list[str], load_s: float) -> None:
    import torch

    prompt_lengths = [len(engine.tokenizer.encode(p)) for p in prompts]
    params = sum(p.numel() for p in engine.model.parameters()) / 1e6
    print(f"model: {engine.model_name} ({params:.0f}M parameters), device {engine.device}, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; loaded in {load_s:.1f} s")
    print(f"{len(convos)} requests, prompt tokens {min(prompt_lengths)}..{max(prompt_lengths)} "
          f"(mean {sum(prompt_lengths) / len(convos):.0f}), {args.max_new_tokens} new tokens "
          f"each; engine batch_max_size={engine.config.batch_max_size} "
          f"batch_max_wait_ms={engine.config.batch_max_wait_ms}")


async def engine_against_baseline(engine, convos, prompts: list[str], sampling: dict) -> dict:
    """The same requests through the engine, then as one static batch (the baseline)."""
    # The baseline runs on the engine's model thread, idle meanwhile: torch work on the event
    # loop's thread leaves a second OpenMP thread team on the 2 cores, which slowed every later
    # engine run (mixed adapters most: mixed_ratio 0.74-0.78 instead of 0.92-0.96, quiet machine).
    # The bot runs no torch on its event loop either.
    loop = asyncio.get_running_loop()

    async def baseline(batch: list[str], options: dict):
        return await loop.run_in_executor(engine._model_thread, run_baseline, engine, batch,
                                          options)

    # Warm both paths once (first-call allocations), then measure.
    await engine.generate(convos[0], max_new_tokens=2, min_new_tokens=2)
    await baseline(prompts[:1], {"max_new_tokens": 2, "min_new_tokens": 2})

    admissions_before = engine.admissions
    engine_wall, engine_lat, results = await run_engine(engine, convos, sampling)
    engine_calls = engine.admissions - admissions_before
    base_wall, base_lat, base_tokens = await baseline(prompts, sampling)
    return {"engine": (engine_calls, sum(r.reply_tokens for r in results), engine_wall,
                       engine_lat),
            "baseline": (len(prompts), base_tokens, base_wall, base_lat),
            "rss_mb": peak_rss_mb()}


def print_comparison(runs: dict, quick: bool) -> tuple[float, float, float]:
    """The table of both runs; returns the throughput ratio, engine p95 and baseline p50."""
    _, engine_tokens, engine_wall, engine_lat = runs["engine"]
    n, base_tokens, base_wall, base_lat = runs["baseline"]
    ratio = (engine_tokens / engine_wall) / (base_tokens / base_wall)
    p95_engine, p50_base = percentile(engine_lat, 0.95), percentile(base_lat, 0.50)
    print()
    print(f"{'approach':<10} {'requests':>8} {'calls':>6} {'tokens':>7} {'wall s':>8} "
          f"{'tokens/s':>9} {'p50 ms':>9} {'p95 ms':>9}")
    for name in ("engine", "baseline"):
        calls, tokens, wall, lat = runs[name]
        print(f"{name:<10} {n:>8} {calls:>6} {tokens:>7} {wall:>8.2f} {tokens / wall:>9.1f} "
              f"{percentile(lat, 0.5):>9.0f} {percentile(lat, 0.95):>9.0f}")
    print("(latency: from the common start until the reply; baseline requests wait for the "
          "ones before them)")
    print(f"throughput ratio engine/baseline: {ratio:.2f}x (goal >= 3)  "
          f"engine p95 {p95_engine:.0f} ms vs baseline p50 {p50_base:.0f} ms (goal: below)")
    print(f"peak RSS (model, engine and baseline): {runs['rss_mb']:.0f} MB")
    if quick:
        print("(--quick is a smoke test: the goals apply to the default run, 16 requests of 64 "
              "new tokens)")
    return ratio, p95_engine, p50_base


def print_swap(swap: dict) -> None:
    print(f"swap idle: {swap['idle_ms']:.0f} ms; swap under load: {swap['swap_ms']:.0f} ms "
          f"(until in service, after the batch in flight); {swap['requests']} requests, served "
          f"by {swap['served']}, failed {len(swap['failed'])}")
    for error in swap["failed"][:3]:
        print(f"  failed: {type(error).__name__}: {error}")


def print_mixed(mixed: dict, adapters: int) -> None:
    for label in ("single", "mixed"):
        row = mixed[label]
        print(f"{label:<6} adapter run: {row['tokens_per_s']:.1f} tokens/s in {row['calls']} "
              f"model call(s), {row['versions']} version(s)")
    print(f"mixed/single tokens/s over {adapters} adapters: {mixed['ratio']:.2f} "
          "(goal >= 0.8)")


async def main(argv=None) -> int:
    args = parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep the table readable
    warnings.filterwarnings("ignore", category=FutureWarning)

    with tempfile.TemporaryDirectory(prefix="bench-generate-") as workdir:
        load_start = time.perf_counter()
        engine = build_engine(args, Path(workdir))
        load_s = time.perf_counter() - load_start
    await engine.start()
    convos = dialogues(engine.tokenizer, args.concurrency)
    sampling = {"max_new_tokens": args.max_new_tokens, "min_new_tokens": args.max_new_tokens}
    prompts = [engine._encode_prompt(c, None, engine.n_positions - args.max_new_tokens)[0]
               for c in convos]
    print_setup(engine, args, convos, prompts, load_s)
    runs = await engine_against_baseline(engine, convos, prompts, sampling)
    ratio, p95_engine, p50_base = print_comparison(runs, args.quick)
    swap = await swap_under_load(engine, convos, sampling, adapter_blob(engine))
    print_swap(swap)
    mixed = await mixed_adapters(engine, convos, sampling, args.adapters)
    print_mixed(mixed, args.adapters)
    await engine.close()
    print(f"throughput_ratio={ratio:.2f} p95_engine_ms={p95_engine:.0f} "
          f"p50_baseline_ms={p50_base:.0f} failed_during_swap={len(swap['failed'])} "
          f"mixed_ratio={mixed['ratio']:.2f}")
    return 1 if swap["failed"] else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
