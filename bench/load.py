"""Benchmark: many chats and moderator ratings at once, through the real path, and nothing lost.

    .venv/bin/python bench/load.py [--chats 200] [--ratings 500] [--model DIR_OR_NAME]
                                   [--pool bounded|default] [--max-new-tokens 16]

A private redis-server (a free port, a temp dir) and, without --model, the tiny offline GPT-2.
The store comes from `Store.from_settings` (the bounded pool: REDIS_MAX_CONNECTIONS,
REDIS_POOL_TIMEOUT_SECONDS); the engine and the runtime's `Conversation` and `Actions` are the
bot's own, at the settings' defaults (QUEUE_MAX, BATCH_MAX_SIZE, ...) except the reply length.

- Seeds --exchanges replies of the bot (exchanges with a Discord message id), as a moderator
  would find them in a channel.
- Then, all at once: --chats chats through `Conversation.reply` as the console makes them
  (style lookup, the engine's queue, the stored exchange), each from its own user, and
  --ratings moderator ratings through `Actions.rate_reply` (the Discord reaction path:
  message id -> exchange -> rating), each a different (reply, moderator) pair, so each
  acknowledged rating can be checked afterwards.
- Then checks every acknowledged write in Redis: a chat answered with a reply must be stored
  with that reply, an acknowledged rating must be there with its value, and the counters must
  agree. lost = acknowledged writes missing afterwards (must be 0).

The engine may answer "busy" when its queue is full (QUEUE_MAX): counted, not lost; it logs one
summary line per burst. `--pool default` uses redis-py's default pool instead (100 connections,
then MaxConnectionsError), to show what the bounded pool fixes.

The last line reads `chats_ok=A/N ratings_ok=B/M busy=C lost=D`; the exit status is 1 when
anything acknowledged was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GUILD = 1  # the one server the chats and ratings are in (also the home server)
SECRET = "bench-load-secret-0123456789abcdef"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--ratings", type=int, default=500)
    parser.add_argument("--exchanges", type=int, default=50,
                        help="bot replies seeded for the moderators to rate (default 50)")
    parser.add_argument("--model", help="hub name or local directory (default: the tiny "
                                        "offline GPT-2, built here)")
    parser.add_argument("--pool", choices=("bounded", "default"), default="bounded",
                        help="the store's bounded pool (default) or redis-py's default one")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    if args.ratings and not args.exchanges:
        parser.error("--ratings needs --exchanges > 0")
    return args


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu})"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def quiet_libraries() -> None:
    """Warnings and up on stderr, offline, without the libraries' progress bars and notices."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    # peft asks transformers a deprecated question on every load; nothing to act on here.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated",
                            category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def make_store(settings, pool: str):
    import redis.asyncio as aioredis

    from bot.core.store import Store

    if pool == "bounded":
        return Store.from_settings(settings)
    return Store(aioredis.from_url(settings.redis_url), prefix=settings.key_prefix,
                 user_secret=settings.user_hash_secret.get_secret_value())


async def timed(coroutine):
    started = time.perf_counter()
    try:
        return await coroutine, time.perf_counter() - started
    except Exception as error:  # a lost request is what this benchmark counts
        return error, time.perf_counter() - started


@dataclass
class Tally:
    """What came back of one kind of request: the ones that worked, how long each took, the
    failures, and (chats) how many were answered busy."""

    ok: list = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    failures: list = field(default_factory=list)
    busy: int = 0


def bench_settings(args, redis_url: str, model_name: str):
    from bot.core.config import load_settings

    settings = load_settings(_env_file=None, redis_url=redis_url, key_prefix="load",
                             model_name=model_name, device="cpu", user_hash_secret=SECRET,
                             max_new_tokens=args.max_new_tokens, cooldown_seconds=0,
                             home_guild_id=GUILD)
    pool_text = (f"bounded, {settings.redis_max_connections} connections, waits up to "
                 f"{settings.redis_pool_timeout_seconds:g} s" if args.pool == "bounded"
                 else "redis-py's default (100 connections, then MaxConnectionsError)")
    print(f"pool: {pool_text}")
    print(f"engine: QUEUE_MAX={settings.queue_max} BATCH_MAX_SIZE={settings.batch_max_size} "
          f"BATCH_MAX_WAIT_MS={settings.batch_max_wait_ms} MAX_NEW_TOKENS="
          f"{settings.max_new_tokens}")
    return settings


async def seed_exchanges(store, count: int) -> list:
    """`count` earlier bot replies for the moderators to rate."""
    from bot.core.store import Exchange

    return [await store.exchanges.add(
        Exchange(tenant=GUILD, user_message=f"earlier question {n}", reply=f"earlier reply {n}",
                 message_id=10_000 + n, channel_id=1, guild_id=GUILD), user_id=f"seed{n}")
        for n in range(count)]


def wanted_ratings(seeded: list, count: int) -> list[tuple]:
    """(exchange, moderator, value): each seeded reply rated by one moderator after another."""
    return [(seeded[i % len(seeded)], f"mod{i // len(seeded)}", 1 if i % 3 else -1)
            for i in range(count)]


def tally_chats(results) -> Tally:
    from bot.core.store import Exchange
    from bot.service.drafts import Failure

    tally = Tally()
    for result, seconds in results:
        if isinstance(result, Exchange):
            tally.ok.append(result)
            tally.latency.append(seconds)
        elif isinstance(result, Failure) and result.reason == "busy":
            tally.busy += 1
        else:
            tally.failures.append(result)
    return tally


def tally_ratings(results, wanted: list[tuple]) -> Tally:
    tally = Tally()
    for (result, seconds), rating in zip(results, wanted, strict=True):
        if not isinstance(result, Exception) and result is not None and result.ok:
            tally.ok.append(rating)
            tally.latency.append(seconds)
        else:
            tally.failures.append(result)
    return tally


async def count_lost(store, chats: Tally, ratings: Tally) -> int:
    """Answered chats and stored ratings that Redis does not hold as they were answered."""
    from bot.core.store import UnknownExchange

    lost = 0
    for exchange in chats.ok:
        try:
            stored = await store.exchanges.get(exchange.id)
        except UnknownExchange:
            stored = None
        if stored is None or stored.reply != exchange.reply:
            lost += 1
    for exchange, moderator, value in ratings.ok:
        votes = await store.exchanges.ratings(exchange.id)
        if votes.get(store.user_hash(moderator)) != value:
            lost += 1
    return lost


def print_tallies(chats: Tally, ratings: Tally, refused: int) -> None:
    print(f"chats: {len(chats.ok)} answered and stored, {chats.busy} answered busy (queue full), "
          f"{len(chats.failures)} failed; p50 {percentile(chats.latency, 0.5):.2f} s, "
          f"p95 {percentile(chats.latency, 0.95):.2f} s; the engine turned away "
          f"{refused} request(s)")
    print(f"ratings: {len(ratings.ok)} stored, {len(ratings.failures)} failed; "
          f"p50 {percentile(ratings.latency, 0.5) * 1000:.0f} ms, "
          f"p95 {percentile(ratings.latency, 0.95) * 1000:.0f} ms")
    for label, failures in (("chat", chats.failures), ("rating", ratings.failures)):
        if failures:
            first = failures[0]
            text = first.text if hasattr(first, "text") else f"{type(first).__name__}: {first}"
            print(f"first {label} failure: {text}")


async def exchange_counter(store) -> int:
    return (await store.tenant(GUILD).exchanges.stats())["total"]["exchanges"]


async def load_at_once(args, store, runtime, seeded: list) -> tuple[Tally, Tally, int]:
    """The chats and the ratings all at once; their tallies and what was lost."""
    from bot.core.dialogue import Turn
    from bot.engine.engine import BUSY_QUIET_S
    from bot.frontends.console import ConsoleSink

    def chat(text: str, user_id: str):
        """One chat as the console makes it: its stored exchange, or the Failure."""
        return runtime.conversation.reply([Turn("user", text)], ConsoleSink(), source="console",
                                          user_id=user_id, guild_id=None, channel_id=None)

    await chat("warm up", "warm")
    counted_before = await exchange_counter(store)
    ratings_wanted = wanted_ratings(seeded, args.ratings)
    print(f"seeded {len(seeded)} bot replies; now {args.chats} chats and "
          f"{len(ratings_wanted)} ratings at once (load average {load_average()})")
    started = time.perf_counter()
    results = await asyncio.gather(
        *(timed(chat(f"question number {i}, please", f"user{i}")) for i in range(args.chats)),
        *(timed(runtime.actions.rate_reply(GUILD, exchange.message_id, moderator, value))
          for exchange, moderator, value in ratings_wanted))
    wall = time.perf_counter() - started
    await asyncio.sleep(BUSY_QUIET_S + 0.2)  # the engine's burst summary, logged before ours
    chats = tally_chats(results[:args.chats])
    ratings = tally_ratings(results[args.chats:], ratings_wanted)
    lost = await count_lost(store, chats, ratings)
    counted = await exchange_counter(store) - counted_before
    print(f"done in {wall:.1f} s (load average {load_average()})")
    print_tallies(chats, ratings, runtime.generator.refused)
    print(f"checked in Redis: {len(chats.ok)} exchanges and {len(ratings.ok)} ratings; "
          f"exchange counter +{counted} (stored chats {len(chats.ok)})")
    return chats, ratings, lost + abs(counted - len(chats.ok))


async def run(args, redis_url: str, model_name: str) -> int:
    from bot.engine.engine import Engine
    from bot.runtime import Runtime

    settings = bench_settings(args, redis_url, model_name)
    store = make_store(settings, args.pool)
    engine = Engine.from_settings(settings, store.registry.blob)
    await engine.start()
    try:
        async with Runtime(settings, store=store, generator=engine) as runtime:
            seeded = await seed_exchanges(store, args.exchanges)
            chats, ratings, lost = await load_at_once(args, store, runtime, seeded)
            print(f"chats_ok={len(chats.ok)}/{args.chats} ratings_ok={len(ratings.ok)}/"
                  f"{args.ratings} busy={chats.busy} lost={lost}")
            return 1 if lost else 0
    finally:
        await engine.close()
        await store.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    from bot.core.local_redis import LocalRedis
    from trainer.demo.tiny_model import build_tiny_model

    print(f"machine: {machine()}; load average {load_average()}")
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        model_name = args.model or str(build_tiny_model(Path(tmp) / "tiny-gpt2"))
        print(f"model: {model_name if args.model else 'the tiny offline GPT-2'}")
        with LocalRedis() as server:  # its own temp dir, a free port
            print(f"redis: a private redis-server on port {server.port}")
            return asyncio.run(run(args, server.url, model_name))


if __name__ == "__main__":
    sys.exit(main())
