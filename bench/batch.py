"""Benchmark: the engine's tokens/s by batch size (BATCH_MAX_SIZE), weight type (MODEL_DTYPE) and
torch threads (TORCH_THREADS), in the same run: the figures behind those defaults.

    .venv/bin/python bench/batch.py [--rows 8,16,32] [--dtypes float32,int8] [--threads 1,2]
                                    [--tokens 64] [--repeats 2] [--model DIR] [--quick]

Model: GPT-2 small shape with random weights (bench/models.py) unless --model. Each
configuration answers a burst of `rows` requests (mixed prompt lengths, bench/generate.py's
dialogues) of exactly --tokens new tokens each, sampled as the bot samples, with
BATCH_MAX_SIZE = rows, so the burst runs as one batch. The configurations take turns, in an
order that alternates (forward, then backward), --repeats times each; medians. Every figure is
also given as a ratio to the baseline measured in the same run: 16 rows (or the --rows in the
middle), float32, 1 thread.

Last line: `best=DTYPE/ROWS/THREADS best_vs_base=A rows_max_vs_mid=B threads_max_vs_1=C`, where
rows_max_vs_mid is the largest batch's tokens/s over the middle one's (best type, 1 thread) and
threads_max_vs_1 the most threads' over 1 thread's (best type, middle batch).
--quick: rows 2,4, tokens 8, 1 repeat.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from generate import dialogues  # noqa: E402  (bench/generate.py)
from models import build_model_dir, run_in_workdir  # noqa: E402  (bench/models.py)
from quantize import burst, load_average  # noqa: E402  (bench/quantize.py)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    numbers = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    parser.add_argument("--rows", type=numbers, default=[8, 16, 32])
    parser.add_argument("--dtypes", type=lambda t: [x for x in t.split(",") if x],
                        default=["float32", "int8"])
    parser.add_argument("--threads", type=numbers, default=[1, 2])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", help="model directory (default: GPT-2 small shape, random)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.tokens, args.repeats = [2, 4], 8, 1
    return args


async def measure(args, model_dir: str) -> dict[tuple, list[float]]:
    """(dtype, rows, threads) -> burst tokens/s per repeat."""
    import torch

    from bot.core.generation import GenerationConfig
    from bot.engine.engine import Engine

    engines = {(dtype, rows): Engine.load_model(GenerationConfig(
        model_name=model_dir, device="cpu", dtype=dtype, max_new_tokens=args.tokens,
        batch_max_size=rows, queue_max=max(64, rows)))
        for dtype in args.dtypes for rows in args.rows}
    convos = dialogues(next(iter(engines.values())).tokenizer, max(args.rows))
    configs = [(dtype, rows, threads) for dtype in args.dtypes for rows in args.rows
               for threads in args.threads]
    runs: dict[tuple, list[float]] = {config: [] for config in configs}
    try:
        for engine in engines.values():  # warm up: first-call allocations
            await engine.generate(convos[0], max_new_tokens=2, min_new_tokens=2)
        for repeat in range(args.repeats):
            for dtype, rows, threads in configs if repeat % 2 == 0 else configs[::-1]:
                torch.set_num_threads(threads)
                tps = await burst(engines[dtype, rows], convos[:rows], args.tokens)
                runs[dtype, rows, threads].append(tps)
                print(f"  repeat {repeat + 1} {dtype} {rows} rows {threads} thread(s): "
                      f"{tps:.1f} tokens/s", flush=True)
    finally:
        for engine in engines.values():
            await engine.close()
    return runs


async def run(args, workdir: Path) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; load average {load_average()}")
    model_dir = args.model or build_model_dir(workdir)
    runs = await measure(args, model_dir)
    tps = {config: statistics.median(values) for config, values in runs.items()}
    mid_rows = sorted(args.rows)[len(args.rows) // 2]
    low_threads = min(args.threads)
    base = tps[args.dtypes[0], mid_rows, low_threads]
    print(f"\nmedian tokens/s of {args.repeats} bursts ({args.tokens} tokens per request); "
          f"ratio to {args.dtypes[0]}, {mid_rows} rows, {low_threads} thread(s)")
    print(f"{'MODEL_DTYPE':<12} {'rows':>5} {'threads':>8} {'tokens/s':>9} {'ratio':>6}")
    for (dtype, rows, threads), value in tps.items():
        print(f"{dtype:<12} {rows:>5} {threads:>8} {value:>9.1f} {value / base:>6.2f}")
    best = max(tps, key=tps.get)
    dtype = best[0]
    rows_ratio = tps[dtype, max(args.rows), low_threads] / tps[dtype, mid_rows, low_threads]
    threads_ratio = tps[dtype, mid_rows, max(args.threads)] / tps[dtype, mid_rows, low_threads]
    print(f"load average after {load_average()}")
    print(f"best={dtype}/{best[1]}/{best[2]} best_vs_base={tps[best] / base:.2f} "
          f"rows_max_vs_mid={rows_ratio:.2f} threads_max_vs_1={threads_ratio:.2f}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_in_workdir(run, args, "bench-batch-")


if __name__ == "__main__":
    sys.exit(main())
