"""Benchmark: one training cycle against the seed approach, on the same data in the same run.

    .venv/bin/python bench/train.py [--model DIR_OR_NAME] [--examples 200] [--trials 6]
                                    [--epochs 4] [--device cpu] [--lr-min 1e-5 --lr-max 3e-3]

The data: the sample customer-service pairs (trainer/data/customer_service.jsonl), repeated
with numbered variations of the user's message up to --examples exchanges, imported into a
private redis-server with positive ratings. Two child processes then read the same rated
exchanges, each with the same train/validation split (trainer.dataset):

- cycle: `trainer.cycle.run_cycle` (LoRA, masked loss, Optuna search of --trials trials of up
  to --epochs epochs, gate and publish);
- seed:  the seed approach: a full fine-tune with transformers' Trainer over the same training
  examples joined into one text block, cut into blocks, no masking, --epochs epochs at
  --seed-lr with batch 8.

Each child reports wall time, trained tokens per second, peak RSS (its own process, so the two
do not mix) and the masked validation loss on the rated replies (the same validation set).
Without --model it builds the tiny offline GPT-2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECRET = "bench-secret"
BENCH_GUILD = 1  # the one server whose ratings the benchmark trains on
PREFIX = "bench"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_settings(args):
    from bot.core.config import load_settings

    return load_settings(redis_url=args.redis, key_prefix=PREFIX, model_name=args.model,
                         device=args.device, user_hash_secret=SECRET, min_new_ratings=0,
                         search_trials=args.trials, max_epochs=args.epochs,
                         search_lr_min=args.lr_min, search_lr_max=args.lr_max,
                         max_train_examples=max(args.examples, 1),
                         reports_dir=Path(args.workdir) / "reports", _env_file=None)


async def fill(args) -> int:
    """Import the sample pairs, varied and repeated, as rated exchanges."""
    from bot.core.store import Store
    from trainer.importer import import_pairs

    text = resources.files("trainer").joinpath("data/customer_service.jsonl").read_text("utf-8")
    samples = [json.loads(line) for line in text.splitlines() if line.strip()]
    rows = [{**samples[n % len(samples)],
             "input": f"{samples[n % len(samples)]['input']} (ticket {n})"}
            for n in range(args.examples)]
    store = Store.from_settings(bench_settings(args))
    try:
        await store.ping()
        return (await import_pairs(store.tenant(BENCH_GUILD), rows)).stored
    finally:
        await store.close()


async def load_data(settings):
    from bot.core.store import Store
    from trainer.dataset import build_dataset
    from trainer.fit import load_tokenizer

    store = Store.from_settings(settings)
    try:
        rated = await store.tenant(BENCH_GUILD).exchanges.rated()
    finally:
        await store.close()
    tokenizer = load_tokenizer(settings.model_name)
    data = build_dataset(rated, tokenizer, max_tokens=settings.max_train_tokens,
                         max_examples=settings.max_train_examples,
                         val_fraction=settings.val_fraction)
    return tokenizer, data


async def part_cycle(args) -> dict:
    from bot.core.store import Store
    from trainer.cycle import run_cycle

    settings = bench_settings(args)
    store = Store.from_settings(settings)
    baseline = peak_rss_mb()
    started = time.perf_counter()
    try:
        outcome = await run_cycle(settings, store, BENCH_GUILD, force=True, progress=False)
    finally:
        await store.close()
    wall = time.perf_counter() - started
    epochs = sum(len(t["val_losses"]) for t in outcome.trial_details)
    tokens = epochs * outcome.data.get("train_tokens", 0)
    return {"approach": "cycle (LoRA + search)", "outcome": outcome.outcome,
            "wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
            "epochs_run": epochs, "trials": outcome.trials,
            "val_loss": outcome.val_loss["candidate"], "base_val_loss": outcome.val_loss["base"],
            "train": outcome.data.get("train_examples"),
            "validation": outcome.data.get("validation_examples"),
            "lr": outcome.learning_rate, "batch": outcome.batch_size,
            "import_rss_mb": baseline, "peak_rss_mb": peak_rss_mb()}


async def part_seed(args) -> dict:
    import torch
    from transformers import Trainer, TrainingArguments

    from trainer.dataset import targets
    from trainer.evaluate import evaluate_loss
    from trainer.fit import load_base_model

    settings = bench_settings(args)
    baseline = peak_rss_mb()
    started = time.perf_counter()
    tokenizer, data = await load_data(settings)
    model = load_base_model(settings.model_name, settings.resolved_device())
    # The seed approach: every training example's text in one block, no masking.
    block_text = "".join(tokenizer.decode(e.input_ids) for e in targets(data.train))
    ids = tokenizer.encode(block_text)
    size = min(128, model.config.n_positions)
    blocks = [torch.tensor(ids[i:i + size]) for i in range(0, len(ids) - size + 1, size)]
    dataset = [{"input_ids": b, "labels": b} for b in blocks]
    training_args = TrainingArguments(
        output_dir=str(Path(args.workdir) / "seed"), num_train_epochs=args.epochs,
        per_device_train_batch_size=8, learning_rate=args.seed_lr, save_strategy="no",
        logging_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=settings.resolved_device() == "cpu")
    train_started = time.perf_counter()
    Trainer(model=model, args=training_args, train_dataset=dataset).train()
    train_s = time.perf_counter() - train_started
    wall = time.perf_counter() - started
    tokens = len(blocks) * size * args.epochs
    model.eval()
    val = evaluate_loss(model, data.validation, device=settings.resolved_device(),
                        micro_batch_size=8, pad_id=tokenizer.eos_token_id)
    return {"approach": "seed (full FT, Trainer, text block)", "outcome": "-",
            "wall_s": wall, "train_s": train_s, "tokens": tokens, "tokens_per_s": tokens / wall,
            "epochs_run": args.epochs, "trials": 1, "val_loss": val,
            "train": len(targets(data.train)), "validation": len(targets(data.validation)),
            "lr": args.seed_lr,
            "batch": 8, "import_rss_mb": baseline, "peak_rss_mb": peak_rss_mb()}


def child(args, part: str) -> dict:
    command = [sys.executable, __file__, "--part", part, "--redis", args.redis, "--model",
               args.model, "--workdir", args.workdir, "--examples", str(args.examples),
               "--trials", str(args.trials), "--epochs", str(args.epochs), "--device",
               args.device, "--seed-lr", str(args.seed_lr), "--lr-min", str(args.lr_min),
               "--lr-max", str(args.lr_max)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{part} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    columns = [("approach", "{}"), ("wall_s", "{:.1f}"), ("tokens", "{}"),
               ("tokens_per_s", "{:.0f}"), ("epochs_run", "{}"), ("val_loss", "{:.4f}"),
               ("peak_rss_mb", "{:.0f}"), ("lr", "{:.2e}"), ("batch", "{}")]
    cells = [[name for name, _ in columns]]
    cells += [[fmt.format(row[name]) if row.get(name) is not None else "-"
               for name, fmt in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="GPT-2 checkpoint (default: build the tiny one)")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed-lr", type=float, default=5e-4)
    parser.add_argument("--lr-min", type=float, default=1e-5, help="searched LoRA lr range")
    parser.add_argument("--lr-max", type=float, default=3e-3)
    parser.add_argument("--part", choices=["cycle", "seed"], help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part:
        import logging

        logging.basicConfig(level=logging.WARNING)
        result = asyncio.run(part_cycle(args) if args.part == "cycle" else part_seed(args))
        print(json.dumps(result))
        return 0

    from bot.core.local_redis import LocalRedis

    with tempfile.TemporaryDirectory(prefix="bench-train-") as workdir:
        args.workdir = workdir
        if not args.model:
            from trainer.demo.tiny_model import build_tiny_model

            args.model = str(build_tiny_model(Path(workdir) / "tiny-gpt2"))
        (Path(workdir) / "redis").mkdir()
        server = LocalRedis(Path(workdir) / "redis").start()
        try:
            args.redis = server.url
            stored = asyncio.run(fill(args))
            rows = [child(args, "cycle"), child(args, "seed")]
        finally:
            server.close()
    import torch

    print(f"model {args.model}, device {args.device}, {stored} rated exchanges, "
          f"LoRA lr searched in [{args.lr_min:g}, {args.lr_max:g}], "
          f"{rows[0]['train']} train / {rows[0]['validation']} validation examples, "
          f"torch threads {torch.get_num_threads()}")
    print(f"base model val loss (masked, rated replies): {rows[0]['base_val_loss']:.4f}; "
          f"cycle outcome: {rows[0]['outcome']}, {rows[0]['trials']} trials")
    print(table(rows))
    print("tokens/s = trained tokens (every epoch of every trial) / whole wall time "
          "(loading, data set, search, evaluation, publish included); peak RSS per process, "
          f"after imports: cycle {rows[0]['import_rss_mb']:.0f} MB, "
          f"seed {rows[1]['import_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
