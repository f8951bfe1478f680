"""Benchmark: the serving engine (iteration-level batching, streaming, MODEL_DTYPE) against
static batching, on the same model in the same run.

    .venv/bin/python bench/serve.py [--device cpu] [--model DIR] [--requests 16]
                                    [--max-new-tokens 64] [--arrivals 32] [--load 0.8]
                                    [--dtype auto] [--compare float32,bfloat16,int8]
                                    [--repeats 3] [--threads N] [--quick]

Without --model the model is the GPT-2 small architecture (GPT2Config(): 124M parameters,
vocabulary 50257) with random weights, saved here and loaded with `from_pretrained` like the
bot loads its model; the tokenizer is the tiny offline one, its vocabulary filled up to the
model's with placeholder words so that every generated token has text to stream.

- static: today's way, one `model.generate` per batch of the requests that have arrived (after
  a BATCH_MAX_WAIT_MS pause), later arrivals wait for it; float32 weights on CPU as before
  (bf16/fp16 on a GPU). Its whole reply arrives at once, so its time to first token is its
  latency.
- engine: `bot.engine.engine.Engine` with MODEL_DTYPE=--dtype (auto: measured at start-up,
  bot/engine/model_dtype.py), its replies streamed; time to first token is the first streamed
  piece. Engines of the --compare types (int8 on a CPU only) run the burst too, to tell
  scheduling from weight type apart.

1. burst: --requests requests at once, --max-new-tokens tokens each (min = max, so both sides
   generate the same number): tokens/s; throughput_ratio = engine / static. Every server
   (static, each engine, CTranslate2) runs --repeats bursts, taking turns in an order that
   alternates (forward, then backward), so a change of load favours none; medians.
2. Poisson: --arrivals requests arriving at --load times the static burst's measured capacity,
   mixed prompt lengths: time to first token and latency per request; p95_ratio = engine p95
   latency / static p95 latency. Halfway through the engine's run a new LoRA adapter is loaded
   and later requests use it (a hot swap): no request may fail.
CTranslate2 int8 takes its turns in the burst only when `import ctranslate2` works (the optional
`ct2` extra; never installed in the test path), as an anchor.

Last line: `ttft_p95_ms=A p95_ms=B p95_ratio=Q throughput_ratio=R failed=N` (engine figures;
N counts the engines' failed requests). --quick: 4 requests, 8 tokens, 8 arrivals, 1 repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from anchors import StaticServer, ctranslate2_runner  # noqa: E402  (bench/anchors.py)
from generate import (  # noqa: E402  (bench/generate.py)
    MADE_ADAPTERS,
    adapter_blob,
    dialogues,
    made_adapter,
    percentile,
)
from models import build_model_dir  # noqa: E402  (bench/models.py)

from bot.engine.model_dtype import DTYPES  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="local model directory (default: GPT-2 small "
                                        "architecture with random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=DTYPES,
                        help="the engine's MODEL_DTYPE (its figures make the last line)")
    parser.add_argument("--compare", default="float32,bfloat16,int8",
                        help="more engines in the burst, by MODEL_DTYPE (comma-separated)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="bursts per server, taking turns (order alternating); medians")
    parser.add_argument("--requests", type=int, default=16, help="burst size (and batch size)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--arrivals", type=int, default=32, help="Poisson run's requests")
    parser.add_argument("--load", type=float, default=0.8,
                        help="Poisson rate as a share of the static burst's capacity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int,
                        help="torch threads for both sides (default: torch's, one per core); "
                             "1 on a CPU shared with other work, where threads that wait for "
                             "each other make every small step slow")
    parser.add_argument("--quick", action="store_true", help="4 requests, 8 tokens, 8 arrivals")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.max_new_tokens, args.arrivals, args.repeats = 4, 8, 8, 1
    return args


async def timed_stream(generator, convo, adapter: str, sampling: dict) -> dict:
    """One reply streamed from `generator` (the engine, or bench/fleet.py's remote one), timed:
    perf_counter marks (sent, first piece, done), TTFT and latency in ms, tokens, the version
    that answered, and `held` where the stream reports it."""
    started = time.perf_counter()
    stream = generator.stream(convo, adapter=adapter, **sampling)
    first = None
    async for _ in stream:
        first = first or time.perf_counter()
    done = time.perf_counter()
    return {"sent": started, "first": first or done, "done": done,
            "ttft": ((first or done) - started) * 1000, "latency": (done - started) * 1000,
            "tokens": stream.generation.reply_tokens,
            "version": stream.generation.adapter_version, "held": getattr(stream, "held", None)}


async def burst(ask, items) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    results = await asyncio.gather(*(ask(item) for item in items), return_exceptions=True)
    return time.perf_counter() - started, results


async def poisson(ask, items, gaps, midway=None) -> list:
    """Send item i at the sum of the first i gaps; start `midway` (a coroutine function) once
    half of them have been sent, beside the arrivals: they keep their times while it runs,
    except the last one, which waits for it when it is still running (so at least one request
    comes after it, however slow the machine)."""
    started = time.perf_counter()
    at, tasks, beside = 0.0, [], None
    for index, (item, gap) in enumerate(zip(items, gaps, strict=True)):
        at += gap
        await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
        if beside is not None and index == len(items) - 1:
            await beside
        tasks.append(asyncio.create_task(ask(item)))
        if midway is not None and index == len(items) // 2:
            beside = asyncio.create_task(midway())
    results = await asyncio.gather(*tasks, return_exceptions=True)
    if beside is not None:
        await beside
    return results


def figures(results: list) -> dict:
    ok = [r for r in results if not isinstance(r, BaseException)]
    ttft = [r["ttft"] for r in ok] or [0.0]
    latency = [r["latency"] for r in ok] or [0.0]
    return {"ok": len(ok), "failed": len(results) - len(ok), "tokens": sum(r["tokens"] for r in ok),
            "ttft50": percentile(ttft, 0.5), "ttft95": percentile(ttft, 0.95),
            "p50": percentile(latency, 0.5), "p95": percentile(latency, 0.95),
            "errors": [r for r in results if isinstance(r, BaseException)]}


async def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        return await run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Servers:
    """Both sides of the comparison, on one model, with the requests they answer."""

    engine: object
    others: dict[str, object]  # "engine <dtype>" -> an engine of another --compare type
    static: StaticServer
    convos: list  # conversations for the engine
    prompt_ids: list[list[int]]  # the same, tokenised for the static side
    sampling: dict

    @property
    def engines(self) -> list[tuple[str, object]]:
        return [("engine", self.engine), *self.others.items()]

    async def close(self) -> None:
        await self.static.close()
        for _, engine in self.engines:
            await engine.close()


def start_servers(args, model_dir: str) -> Servers:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bot.core.generation import GenerationConfig
    from bot.engine.engine import Engine
    from bot.engine.model_dtype import resolve_dtype

    n, max_new = args.requests, args.max_new_tokens
    common = dict(model_name=model_dir, device=args.device, max_new_tokens=max_new,
                  batch_max_size=n, queue_max=max(64, 4 * args.arrivals))
    engine = Engine.load_model(GenerationConfig(dtype=args.dtype, **common), made_adapter)
    others = {f"engine {dtype}": Engine.load_model(GenerationConfig(dtype=dtype, **common))
              for dtype in args.compare.split(",") if dtype and dtype != args.dtype
              and (dtype != "int8" or args.device == "cpu")}  # int8 is a CPU path
    static_dtype = resolve_dtype("auto", args.device) if args.device != "cpu" else torch.float32
    static_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=static_dtype)
    static_model = static_model.to(args.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sampling = {"max_new_tokens": max_new, "min_new_tokens": max_new}
    hf_sampling = dict(sampling, do_sample=True, temperature=engine.default_sampling.temperature,
                       top_p=engine.default_sampling.top_p,
                       repetition_penalty=engine.default_sampling.repetition_penalty)
    static = StaticServer(static_model, tokenizer, n, engine.config.batch_max_wait_ms / 1000,
                          hf_sampling)
    convos = dialogues(tokenizer, max(n, args.arrivals))
    budget = engine.n_positions - max_new
    prompt_ids = [engine._encode_prompt(c, None, budget)[1] for c in convos]
    lengths = [len(p) for p in prompt_ids]
    params = sum(p.numel() for p in static_model.parameters()) / 1e6
    print(f"model: {params:.0f}M parameters, device {args.device}, engine MODEL_DTYPE "
          f"{args.dtype} (embeddings {next(engine.model.parameters()).dtype}), static weights "
          f"{static_dtype}; torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"prompt tokens {min(lengths)}..{max(lengths)}, {max_new} new tokens per request")
    return Servers(engine, others, static, convos, prompt_ids, sampling)


async def run_burst(args, servers: Servers, model_dir: str) -> dict:
    """1. every request at once, the servers taking turns (the order alternating) --repeats
    times; name -> (median wall seconds, that run's figures, failures over all runs)."""
    n = args.requests
    bursts = {"static": lambda: burst(servers.static.ask, servers.prompt_ids[:n])}
    for name, e in servers.engines:
        bursts[name] = lambda e=e: burst(
            lambda c: timed_stream(e, c, "base", servers.sampling), servers.convos[:n])
    runs: dict[str, list] = {name: [] for name in bursts}
    ct2 = ctranslate2_runner(model_dir, servers.prompt_ids[:n], servers.static.tokenizer,
                             args.max_new_tokens)
    if ct2 is not None:
        runs["ct2 int8"] = []
    for repeat in range(args.repeats):
        order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
        for name in order:
            if name == "ct2 int8":
                wall, count = await ct2()
                runs[name].append((wall, figures([{"ttft": 0.0, "latency": 0.0,
                                                   "tokens": count}])))
                continue
            wall, results = await bursts[name]()
            runs[name].append((wall, figures(results)))
    rows = {}
    for name, done in runs.items():
        wall, f = sorted(done, key=lambda run: run[0])[len(done) // 2]
        rows[name] = (wall, dict(f, failed=sum(g["failed"] for _, g in done),
                                 errors=[e for _, g in done for e in g["errors"]]))
    print(f"\n1. burst: {n} requests at once x {args.max_new_tokens} tokens, median of "
          f"{args.repeats} turns each")
    print(f"{'server':<16} {'tokens':>7} {'wall s':>7} {'tokens/s':>9} {'ttft p95':>9} "
          f"{'p95 ms':>8} {'failed':>6}")
    for name, (wall, f) in rows.items():
        print(f"{name:<16} {f['tokens']:>7} {wall:>7.2f} {f['tokens'] / wall:>9.1f} "
              f"{f['ttft95']:>9.0f} {f['p95']:>8.0f} {f['failed']:>6}")
    if ct2 is None:
        print("ctranslate2 int8: not installed (pip install '.[ct2]'), row left out")
    return rows


async def run_poisson(args, servers: Servers, capacity: float) -> dict:
    """2. Poisson arrivals at --load of the static burst's capacity (requests/s), with a hot
    swap midway; the engine's figures."""
    engine = servers.engine
    rate = args.load * capacity
    rng = random.Random(args.seed)
    gaps = [0.0] + [rng.expovariate(rate) for _ in range(args.arrivals - 1)]
    items = list(range(args.arrivals))
    static_results = await poisson(lambda i: servers.static.ask(servers.prompt_ids[i]),
                                   items, gaps)
    MADE_ADAPTERS["bench-v2"] = adapter_blob(engine)
    adapter = {"version": "base"}

    async def swap():
        started = time.perf_counter()
        await engine.load("bench-v2")
        adapter["version"] = "bench-v2"
        adapter["ms"] = (time.perf_counter() - started) * 1000

    engine_results = await poisson(
        lambda i: timed_stream(engine, servers.convos[i], adapter["version"], servers.sampling),
        items, gaps, swap)
    st, en = figures(static_results), figures(engine_results)
    served = Counter(r["version"] for r in engine_results if not isinstance(r, BaseException))
    print(f"\n2. Poisson: {args.arrivals} requests at {rate:.2f}/s ({args.load:.0%} of the "
          f"static capacity {capacity:.2f}/s), mixed prompt lengths")
    print(f"{'server':<12} {'ttft p50':>9} {'ttft p95':>9} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'failed':>6}")
    for name, f in (("static", st), ("engine", en)):
        print(f"{name:<12} {f['ttft50']:>9.0f} {f['ttft95']:>9.0f} {f['p50']:>8.0f} "
              f"{f['p95']:>8.0f} {f['failed']:>6}")
    en["p95_ratio"] = en["p95"] / st["p95"]
    print(f"p95_ratio engine/static: {en['p95_ratio']:.2f} (goal <= 0.5); engine TTFT p95 "
          f"{en['ttft95']:.0f} ms (goal <= 1000)")
    print(f"hot swap midway: bench-v2 loaded in {adapter.get('ms', 0):.0f} ms while serving; "
          f"served by {dict(served)}")
    return en


async def run(args, workdir: Path) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    model_dir = args.model or build_model_dir(workdir)
    servers = start_servers(args, model_dir)
    for _, e in servers.engines:  # warm up: first-call allocations
        await e.generate(servers.convos[0], max_new_tokens=2, min_new_tokens=2)
    await servers.static.ask(servers.prompt_ids[0])

    rows = await run_burst(args, servers, model_dir)
    tps = {name: f["tokens"] / wall for name, (wall, f) in rows.items()}
    throughput_ratio = tps["engine"] / tps["static"]
    print(f"throughput_ratio engine/static: {throughput_ratio:.2f} (goal >= 2.0); "
          + ", ".join(f"{name}/static {value / tps['static']:.2f}"
                      for name, value in tps.items() if name not in ("engine", "static")))
    en = await run_poisson(args, servers, capacity=args.requests / rows["static"][0])
    engine_rows = [f for name, (_, f) in rows.items() if name != "static"]
    failed = en["failed"] + sum(f["failed"] for f in engine_rows)
    for error in (en["errors"] + [e for f in engine_rows for e in f["errors"]])[:3]:
        print(f"  failed: {type(error).__name__}: {error}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    await servers.close()
    print(f"ttft_p95_ms={en['ttft95']:.0f} p95_ms={en['p95']:.0f} "
          f"p95_ratio={en['p95_ratio']:.2f} throughput_ratio={throughput_ratio:.2f} "
          f"failed={failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
