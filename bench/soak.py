"""Benchmark: a bounded steady console run that records the process's memory, to tell a leak
(growth per reply) from a plateau.

    .venv/bin/python bench/soak.py [--minutes 10] [--model DIR | --pretrained]
                                   [--max-new-tokens 32] [--sample-seconds 10] [--gc]
                                   [--tracemalloc]

A private redis-server (a free port, a temp dir) and, without --model, the tiny offline GPT-2
(random weights: replies run to their token limit; --pretrained: the demo's pretrained tiny
model, built here, which ends replies as a trained model does). The bot's own runtime serves a
`Console` (`python -m bot console`'s path: conversation, engine, stored exchange): one reply
after another (--pause seconds apart) for --minutes, each streamed piece by piece as to a
terminal, a `/rate up` after every tenth, and halfway one adapter published
and activated, which the runtime swaps in while serving. The resident set size (RSS, from
/proc/self/statm) is sampled every --sample-seconds. --gc collects garbage before each sample
(growth that remains is not waiting garbage); --tracemalloc prints the Python allocations that
grew most between the first sample and the end. Run it under MALLOC_ARENA_MAX=2 to see how much
of the growth is glibc's per-thread arenas.

The slope is a least-squares fit of RSS against replies over the samples after the first
quarter of the run (the warm-up: caches and allocator pools fill first).

The last line reads `rss_start_mb=A rss_end_mb=B rss_slope_mb_per_100_replies=C replies=N
swaps=S` (start: after the first reply).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from generate import adapter_blob  # noqa: E402  (bench/generate.py)
from load import load_average, machine, quiet_libraries  # noqa: E402  (bench/load.py)

GUILD = 1  # the console's server (the home server)
SECRET = "bench-soak-secret-0123456789abcdef"
WARM_UP_SHARE = 0.25
SWAP_TIMEOUT_S = 120.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="how long to keep replying (default 10)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", help="hub name or local directory")
    which.add_argument("--pretrained", action="store_true",
                       help="the demo's pretrained tiny GPT-2 (built here, a few minutes)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds between replies, as a person typing (default 0)")
    parser.add_argument("--gc", action="store_true", help="gc.collect() before each sample")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace Python allocations (slower) and print the top growth")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.sample_seconds <= 0 or args.pause < 0:
        parser.error("--minutes and --sample-seconds must be positive, --pause not negative")
    return args


def rss_mb() -> float:
    """This process's resident set size now, in MiB (Linux)."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Soak:
    """What the run recorded: (seconds, replies, RSS MiB) samples, the counts, a snapshot."""

    samples: list[tuple[float, int, float]] = field(default_factory=list)
    replies: int = 0
    swaps: int = 0
    failures: int = 0
    first_snapshot: tracemalloc.Snapshot | None = None

    def sample(self, started: float, collect: bool) -> None:
        if collect:
            gc.collect()
        self.samples.append((time.monotonic() - started, self.replies, rss_mb()))
        seconds, replies, rss = self.samples[-1]
        print(f"  t={seconds:6.0f} s  replies={replies:5d}  rss={rss:7.1f} MB", flush=True)


def slope_per_100(samples: list[tuple[float, int, float]]) -> float:
    """Least-squares MiB per 100 replies over the samples after the warm-up."""
    kept = samples[int(len(samples) * WARM_UP_SHARE):]
    if len(kept) < 2 or kept[-1][1] == kept[0][1]:
        return float("nan")
    xs = [replies for _, replies, _ in kept]
    ys = [rss for _, _, rss in kept]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    var = sum((x - mean_x) ** 2 for x in xs)
    return cov / var * 100


def messages() -> list[str]:
    """Varied user lines: the sentences of the tiny model's corpus."""
    from trainer.demo.tiny_model import corpus_text

    lines = [line.strip() for line in corpus_text().splitlines() if len(line.strip()) > 8]
    return lines or ["hello, how are you?"]


async def swap_adapter(runtime, settings) -> None:
    """Publish and activate a new adapter; return once the runtime serves it."""
    from bot.core.store import AdapterRecord

    blob = await asyncio.to_thread(adapter_blob, runtime.generator)
    registry = runtime.store.tenant(GUILD).registry
    record = await registry.save(AdapterRecord(base_model=settings.model_name), blob)
    await registry.activate(record.version)
    async with asyncio.timeout(SWAP_TIMEOUT_S):
        while runtime.router.version_for(GUILD) != record.version:
            await asyncio.sleep(0.05)
    print(f"  swapped in adapter {record.version} after {runtime.generator.decode_steps} "
          f"decode steps", flush=True)


async def reply_loop(args, settings, runtime, soak: Soak) -> None:
    from bot.frontends.console import Console

    shown: list[str] = []  # what the console wrote of the current reply (streamed, as a terminal)
    console = Console(runtime, write=shown.append)
    lines = messages()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    swap_at = started + args.minutes * 30
    next_sample = started
    while time.monotonic() < deadline:
        shown.clear()
        answer = await console.handle_line(lines[soak.replies % len(lines)])
        if not "".join(shown).startswith("bot [") or answer:
            soak.failures += 1
        else:
            soak.replies += 1
            if soak.replies % 10 == 0:
                await console.handle_line("/rate up")
        if soak.swaps == 0 and time.monotonic() >= swap_at:
            await swap_adapter(runtime, settings)
            soak.swaps += 1
        if time.monotonic() >= next_sample:
            soak.sample(started, args.gc)
            next_sample += args.sample_seconds
            if args.tracemalloc and soak.first_snapshot is None:
                soak.first_snapshot = tracemalloc.take_snapshot()
        await asyncio.sleep(args.pause)
    soak.sample(started, args.gc)


def print_growth(soak: Soak) -> None:
    if soak.first_snapshot is None:
        return
    print("Python allocations that grew most (tracemalloc):")
    growth = tracemalloc.take_snapshot().compare_to(soak.first_snapshot, "lineno")
    for stat in growth[:10]:
        print(f"  {stat}")


async def run(args, redis_url: str, model_name: str) -> Soak:
    from bot.core.config import load_settings
    from bot.runtime import Runtime

    settings = load_settings(_env_file=None, redis_url=redis_url, key_prefix="soak",
                             model_name=model_name, device="cpu", user_hash_secret=SECRET,
                             max_new_tokens=args.max_new_tokens, cooldown_seconds=0,
                             home_guild_id=GUILD)
    soak = Soak()
    if args.tracemalloc:
        tracemalloc.start()
    async with Runtime(settings) as runtime:
        print(f"model loaded: rss {rss_mb():.1f} MB; replying for {args.minutes:g} min "
              f"(load average {load_average()})", flush=True)
        await reply_loop(args, settings, runtime, soak)
    print_growth(soak)
    return soak


def model_for(args, tmp: Path) -> tuple[str, str]:
    """(MODEL_NAME, what to call it)."""
    if args.model:
        return args.model, args.model
    if args.pretrained:
        from trainer.demo.prepare import PRETRAIN_STEPS, tiny_demo_model

        steps = PRETRAIN_STEPS["quick"]
        path = tiny_demo_model(tmp, lambda text: print(text, flush=True), steps=steps)
        return path, f"the demo's tiny GPT-2, pretrained {steps} steps"
    from trainer.demo.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp / "tiny-gpt2")), "the tiny offline GPT-2 (random weights)"


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    from bot.core.local_redis import LocalRedis

    print(f"machine: {machine()}; load average {load_average()}; MALLOC_ARENA_MAX="
          f"{os.environ.get('MALLOC_ARENA_MAX', '(unset)')}; gc before samples: {args.gc}")
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        model_name, described = model_for(args, Path(tmp))
        print(f"model: {described}; MAX_NEW_TOKENS={args.max_new_tokens}")
        with LocalRedis() as server:
            soak = asyncio.run(run(args, server.url, model_name))
    first = next((s for s in soak.samples if s[1] > 0), soak.samples[0])
    print(f"{soak.replies} replies, {soak.failures} failed, {soak.swaps} swap(s); "
          f"load average {load_average()}")
    print(f"rss_start_mb={first[2]:.1f} rss_end_mb={soak.samples[-1][2]:.1f} "
          f"rss_slope_mb_per_100_replies={slope_per_100(soak.samples):.2f} "
          f"replies={soak.replies} swaps={soak.swaps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
