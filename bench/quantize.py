"""Benchmark: MODEL_DTYPE=int8 (bot/engine/int8.py) against float32: the engine's speed and the
base model's quality, in the same run.

    .venv/bin/python bench/quantize.py [--rows 16] [--tokens 64] [--repeats 3] [--threads N]
                                       [--pretrained DIR] [--quick]

Quality, on two models: the demo's pretrained tiny GPT-2 (--pretrained, default the one the
tests cache in .cache/pretrained, built there when missing: ~3 min) and a GPT-2-small-shaped
model with random weights (bench/models.py). On the support dialogues
(trainer/data/support_dialogues.jsonl, in the bot's prompt format, the reference reply as the
target, as the trainer scores them):
- reference NLL per reply token, float32 and int8; nll_delta = int8 - float32 (the goal: within
  0.05 nats);
- greedy agreement: the share of reply positions where int8's most likely next token is
  float32's (teacher-forced on the reference reply).

Speed, on the GPT-2-small-shaped model: the engine (`Engine.load_model`, MODEL_DTYPE float32 and
int8) answering a burst of --rows requests of exactly --tokens new tokens each, sampled as the
bot samples; the two engines take turns, the first alternating, --repeats times each; medians
(int8_speedup: the median of each repeat's int8/float32 ratio).

Last line: `int8_speedup=A nll_delta=B greedy_agree=C fp32_tok_s=D int8_tok_s=E`, where
nll_delta is the larger of the two models' and greedy_agree the smaller.
--model DIR: another speed model (scored too). --quick: 4 rows, 8 tokens, 1 repeat, 16 dialogues.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from generate import dialogues  # noqa: E402  (bench/generate.py)
from models import build_model_dir, pretrained_demo_model, run_in_workdir  # noqa: E402  (bench/models.py)

SUPPORT = ROOT / "trainer" / "data" / "support_dialogues.jsonl"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16, help="requests per burst (batch size)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dialogues", type=int, default=96, help="support dialogues scored")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--pretrained", help="the demo's pretrained tiny model directory")
    parser.add_argument("--model", help="the speed model, scored too (default: GPT-2-small "
                                        "shape with random weights)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.tokens, args.repeats, args.dialogues = 4, 8, 1, 16
    return args


def support_examples(tokenizer, count: int) -> list:
    from bot.core.dialogue import Turn
    from trainer.dataset import example_from

    with open(SUPPORT, encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines][:count]
    return [example_from(f"s{i}", "reply", [Turn("user", row["input"])], None, row["output"],
                         tokenizer, max_tokens=256) for i, row in enumerate(rows)]


def score(model, examples: list, pad_id: int) -> tuple[float, list]:
    """(NLL per reply token, the most likely token at each reply position)."""
    import torch

    from trainer.evaluate import collate

    total, count, picks = 0.0, 0, []
    with torch.inference_mode():
        for start in range(0, len(examples), 8):
            batch = collate(examples[start:start + 8], pad_id, "cpu")
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits[:, :-1].float()
            labels = batch["labels"][:, 1:]
            at = labels != -100
            logps = torch.log_softmax(logits[at], dim=-1)
            total -= float(logps.gather(1, labels[at][:, None]).sum())
            count += int(at.sum())
            picks.append(logits[at].argmax(-1))
    return total / count, torch.cat(picks)


def quality(model_dir: str, count: int) -> dict:
    """float32 and int8 NLL and their greedy agreement on `count` support dialogues."""
    from bot.core.generation import GenerationConfig
    from bot.engine.serving_model import load_serving_model

    found = {}
    for dtype in ("float32", "int8"):
        model, tokenizer = load_serving_model(
            GenerationConfig(model_name=model_dir, device="cpu", dtype=dtype))
        found[dtype] = score(model, support_examples(tokenizer, count), tokenizer.eos_token_id)
    (nll32, picks32), (nll8, picks8) = found["float32"], found["int8"]
    return {"nll32": nll32, "nll8": nll8, "delta": nll8 - nll32,
            "agree": float((picks32 == picks8).float().mean()), "tokens": len(picks32)}


async def burst(engine, convos, tokens: int) -> float:
    """Tokens/s of one burst: every conversation at once, exactly `tokens` new tokens each."""
    started = time.perf_counter()
    results = await asyncio.gather(*(engine.generate(c, max_new_tokens=tokens,
                                                     min_new_tokens=tokens) for c in convos))
    return sum(r.reply_tokens for r in results) / (time.perf_counter() - started)


async def speed(model_dir: str, args) -> dict[str, list[float]]:
    """Burst tokens/s of the float32 and int8 engines, taking turns, per repeat."""
    from bot.core.generation import GenerationConfig
    from bot.engine.engine import Engine

    engines = {dtype: Engine.load_model(GenerationConfig(
        model_name=model_dir, device="cpu", dtype=dtype, max_new_tokens=args.tokens,
        batch_max_size=args.rows, queue_max=max(64, args.rows))) for dtype in ("float32", "int8")}
    convos = dialogues(engines["float32"].tokenizer, args.rows)
    runs: dict[str, list[float]] = {dtype: [] for dtype in engines}
    try:
        for engine in engines.values():  # warm up: first-call allocations
            await engine.generate(convos[0], max_new_tokens=2, min_new_tokens=2)
        for repeat in range(args.repeats):
            order = list(engines) if repeat % 2 == 0 else list(reversed(engines))
            for dtype in order:
                runs[dtype].append(await burst(engines[dtype], convos, args.tokens))
                print(f"  repeat {repeat + 1} {dtype}: {runs[dtype][-1]:.1f} tokens/s", flush=True)
    finally:
        for engine in engines.values():
            await engine.close()
    return runs


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def run(args, workdir: Path) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; load average {load_average()}")
    small = args.model or build_model_dir(workdir)
    models = {"demo tiny (pretrained)": args.pretrained or pretrained_demo_model(),
              "speed model" if args.model else "gpt2-small shape (random)": small}
    print(f"\nquality on {args.dialogues} support dialogues (reference reply as target)")
    print(f"{'model':<26} {'nll fp32':>9} {'nll int8':>9} {'delta':>7} {'greedy agree':>13} "
          f"{'tokens':>7}")
    found = {}
    for name, directory in models.items():
        q = found[name] = quality(directory, args.dialogues)
        print(f"{name:<26} {q['nll32']:>9.4f} {q['nll8']:>9.4f} {q['delta']:>+7.4f} "
              f"{q['agree']:>13.3f} {q['tokens']:>7}", flush=True)
    print(f"\nspeed: engine, {args.model or 'GPT-2-small shape'}, {args.rows} requests x "
          f"{args.tokens} tokens, {args.repeats} repeats each, alternating")
    runs = await speed(small, args)
    tps = {dtype: statistics.median(values) for dtype, values in runs.items()}
    # The ratio within each repeat (the two ran back to back) is steadier than the ratio of the
    # medians when the host's load changes between repeats.
    speedup = statistics.median(a / b for a, b in zip(runs["int8"], runs["float32"], strict=True))
    print(f"median tokens/s: float32 {tps['float32']:.1f}, int8 {tps['int8']:.1f}; int8/float32 "
          f"per repeat, median {speedup:.2f}x; load average after {load_average()}")
    delta = max(q["delta"] for q in found.values())
    agree = min(q["agree"] for q in found.values())
    print(f"int8_speedup={speedup:.2f} nll_delta={delta:.4f} greedy_agree={agree:.3f} "
          f"fp32_tok_s={tps['float32']:.1f} int8_tok_s={tps['int8']:.1f}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_in_workdir(run, args, "bench-quantize-")


if __name__ == "__main__":
    sys.exit(main())
