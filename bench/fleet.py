"""Benchmark: the engine served by inference workers on Ray Serve (RemoteGenerator, bot/fleet/)
against the same engine in this process, on the same cores, in the same run.

    .venv/bin/python bench/fleet.py [--model mini|tiny|small|DIR] [--burst 16]
                                    [--arrivals 48] [--load 0.7] [--max-new-tokens 32]
                                    [--adapters 8] [--replicas 2] [--slots 4] [--seed 0]
                                    [--quick]

Models (random weights, built here, loaded with from_pretrained): `mini` (default: GPT-2 with 4
layers of width 256, the tests' tokenizer; a run takes a few minutes on 2 cores), `tiny` (the
tests' 2 layers of width 64), `small` (the GPT-2 small architecture, 124M parameters; slow on
2 cores), or a local model directory. --adapters LoRA adapters (random, non-zero) sit in a
registry in a private redis-server; each request names one (round robin).

- local: one Engine in this process, torch's threads on every core, room for every adapter.
- remote: a local Ray instance with the cores of this machine, --replicas worker replicas
  (one core and one torch thread each, --slots adapters each: MAX_LOADED_ADAPTERS), reached
  through a RemoteGenerator; every adapter is warmed first with `load` (Serve spreads them
  over the replicas, each to the one holding fewest).

1. burst: --burst requests at once, --max-new-tokens tokens each (min = max): tokens/s on each
   side; remote_ratio = remote / local.
2. Poisson: --arrivals requests at --load times the local burst's measured rate: time to first
   piece on each side; ttft_overhead_ms = remote p50 - local p50; multiplex_hit = the share of
   the remote's requests (burst and Poisson) served by a replica that already held their
   adapter.
3. failover: the Poisson run again on the remote, one replica killed (ray.kill) once half the
   requests are sent: failover_failed = requests that failed (each a GenerationFailed: a front
   end ends its part with the cut-off note and stores nothing); recovered_s = from the kill to
   the first piece of the first request sent after it.

Last line: `remote_ratio=A ttft_overhead_ms=B multiplex_hit=C failover_failed=D recovered_s=E`.
--quick: the tiny model, 4 adapters, burst 8, 12 arrivals, 8 tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
# The worker replicas import the bot from this checkout too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                         os.environ.get("PYTHONPATH")]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance

from generate import dialogues, percentile  # noqa: E402  (bench/generate.py)
from load import load_average, machine, quiet_libraries  # noqa: E402  (bench/load.py)
from models import build_model_dir, run_in_workdir  # noqa: E402  (bench/models.py)
from serve import timed_stream  # noqa: E402  (bench/serve.py)

import bot.fleet  # noqa: E402,F401  (Ray Serve's routing settings, before ray is imported)

MODELS = {"tiny": dict(), "mini": dict(n_layer=4, n_embd=256, n_head=4, n_positions=512)}
TENANT = 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mini",
                        help="mini (default), tiny, small, or a local model directory")
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--arrivals", type=int, default=48)
    parser.add_argument("--load", type=float, default=0.7,
                        help="Poisson rate as a share of the local burst's rate")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4, help="adapters per replica")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.adapters, args.burst, args.arrivals, args.max_new_tokens = \
            "tiny", 4, 8, 12, 8
    return args


def model_dir(name: str, workdir: Path) -> str:
    from trainer.demo.tiny_model import build_tiny_model

    if name == "small":
        return build_model_dir(workdir)
    if name in MODELS:
        return str(build_tiny_model(workdir / name, **MODELS[name]))
    return name


def settings_for(args, redis_url: str, model: str, **changes):
    from bot.core.config import load_settings

    return load_settings(redis_url=redis_url, key_prefix="fleetbench", model_name=model,
                         device="cpu", model_dtype="float32", temperature=0.0,
                         max_new_tokens=args.max_new_tokens, batch_max_size=16, queue_max=256,
                         home_guild_id=TENANT, _env_file=None, **changes)


async def publish_adapters(store, engine, count: int) -> list[str]:
    from generate import adapter_blob

    from bot.core.store import AdapterRecord

    registry = store.tenant(TENANT).registry
    return [(await registry.save(AdapterRecord(base_model=engine.model_name),
                                 adapter_blob(engine, seed=n + 1))).version
            for n in range(count)]


async def burst(generator, work: list, sampling: dict) -> tuple[float, list]:
    started = time.perf_counter()
    results = await asyncio.gather(*(timed_stream(generator, c, v, sampling) for c, v in work),
                                   return_exceptions=True)
    return time.perf_counter() - started, results


async def poisson(generator, work: list, gaps: list[float], sampling: dict,
                  midway=None) -> tuple[list, float | None]:
    """Send work item i at the sum of the first i gaps; `midway` (a coroutine function) runs
    once half are sent; returns the results and when `midway` ran."""
    started, at, tasks, midway_at = time.perf_counter(), 0.0, [], None
    for index, ((convo, version), gap) in enumerate(zip(work, gaps, strict=True)):
        at += gap
        await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
        tasks.append(asyncio.create_task(timed_stream(generator, convo, version, sampling)))
        if midway is not None and index == len(work) // 2:
            midway_at = time.perf_counter()
            await midway()
    return await asyncio.gather(*tasks, return_exceptions=True), midway_at


def served(results: list) -> list[dict]:
    return [r for r in results if not isinstance(r, BaseException)]


def tokens_per_s(elapsed: float, results: list) -> float:
    return sum(r["tokens"] for r in served(results)) / elapsed


def ttft_p50(results: list) -> float:
    return percentile([r["ttft"] for r in served(results)] or [0.0], 0.5)


def start_ray(replicas_settings) -> object:
    import ray
    from ray import serve

    from bot.fleet.app import worker_app

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024 * 1024)
    serve.start(proxy_location="Disabled")
    overrides = {key: getattr(replicas_settings, key) for key in (
        "redis_url", "key_prefix", "model_name", "device", "model_dtype", "temperature",
        "max_new_tokens", "batch_max_size", "queue_max", "max_loaded_adapters",
        "torch_threads")} | {"_env_file": None}
    serve.run(worker_app(replicas_settings, overrides), name=replicas_settings.ray_app,
              route_prefix=None)
    return ray


async def kill_one_replica(ray, remote) -> str:
    doomed, state = next(iter(remote.replicas.items()))
    ray.kill(ray.get_actor(state["actor"], namespace="serve"))
    return doomed


@dataclass
class Workload:
    work: list  # (conversation, adapter version) per request, in sending order
    sampling: dict
    gaps: list[float] = field(default_factory=list)  # the Poisson run's gaps (seconds)


async def run_local(args, engine, load: Workload, rng: random.Random) -> dict:
    """The local side; sets the Poisson gaps from its burst's rate."""
    await engine.start()
    for version in {version for _, version in load.work}:
        await engine.load(version)
    await burst(engine, load.work[:2], load.sampling)  # warm-up
    elapsed, results = await burst(engine, load.work[:args.burst], load.sampling)
    rate = tokens_per_s(elapsed, results)
    arrivals_per_s = args.load * rate / args.max_new_tokens
    load.gaps = [rng.expovariate(arrivals_per_s) for _ in range(args.arrivals)]
    arrivals, _ = await poisson(engine, load.work[:args.arrivals], load.gaps, load.sampling)
    await engine.close()
    print(f"local : burst {rate:7.1f} tokens/s; Poisson ({arrivals_per_s:.2f} requests/s) "
          f"TTFT p50 {ttft_p50(arrivals):7.1f} ms, failed "
          f"{len(arrivals) - len(served(arrivals))}")
    return {"rate": rate, "ttft": ttft_p50(arrivals)}


async def run_remote(args, remote, load: Workload) -> dict:
    for version in dict.fromkeys(version for _, version in load.work):
        await remote.load(version)
    spread = {r: len(s["loaded"]) for r, s in remote.replicas.items()}
    print(f"adapters per replica after warming: {sorted(spread.values())}")
    await burst(remote, load.work[:2], load.sampling)  # warm-up
    elapsed, results = await burst(remote, load.work[:args.burst], load.sampling)
    arrivals, _ = await poisson(remote, load.work[:args.arrivals], load.gaps, load.sampling)
    rate = tokens_per_s(elapsed, results)
    answered = served(results) + served(arrivals)
    hit = sum(bool(r["held"]) for r in answered) / max(1, len(answered))
    print(f"remote: burst {rate:7.1f} tokens/s; Poisson TTFT p50 {ttft_p50(arrivals):7.1f} "
          f"ms, failed {len(arrivals) - len(served(arrivals))}; multiplex hits {hit:.0%} of "
          f"{len(answered)}")
    return {"rate": rate, "ttft": ttft_p50(arrivals), "hit": hit}


async def run_failover(args, ray, remote, load: Workload) -> dict:
    results, killed_at = await poisson(remote, load.work[:args.arrivals], load.gaps,
                                       load.sampling,
                                       midway=lambda: kill_one_replica(ray, remote))
    failed = [r for r in results if isinstance(r, BaseException)]
    after = [r for r in served(results) if r["sent"] > killed_at]
    recovered = min((r["first"] for r in after), default=float("nan")) - killed_at
    kinds = sorted({type(r).__name__ for r in failed})
    print(f"failover: one replica killed mid-run; {len(failed)} of {len(results)} failed "
          f"({', '.join(kinds) or 'none'}); served again {recovered:.2f} s after the kill; "
          f"load average {load_average()}")
    return {"failed": len(failed), "recovered": recovered}


async def run(args, workdir: Path) -> int:
    from bot.core.local_redis import LocalRedis
    from bot.core.store import Store
    from bot.engine.engine import Engine
    from bot.fleet.remote import RemoteConfig, RemoteGenerator

    (workdir / "redis").mkdir()
    redis = LocalRedis(workdir / "redis").start()
    try:
        model = model_dir(args.model, workdir)
        local_settings = settings_for(args, redis.url, model, max_loaded_adapters=args.adapters)
        store = Store.from_settings(local_settings)
        engine = Engine.from_settings(local_settings, store.registry.blob)
        versions = await publish_adapters(store, engine, args.adapters)
        convos = dialogues(engine.tokenizer, max(args.burst, args.arrivals))
        load = Workload([(convos[i % len(convos)], versions[i % len(versions)])
                         for i in range(max(args.burst, args.arrivals))],
                        {"max_new_tokens": args.max_new_tokens,
                         "min_new_tokens": args.max_new_tokens})
        print(f"machine: {machine()}; load average {load_average()}")
        print(f"model {args.model}: {sum(p.numel() for p in engine.model.parameters()):,} "
              f"parameters; {args.adapters} adapters; {args.max_new_tokens} tokens a reply")
        local = await run_local(args, engine, load, random.Random(args.seed))

        remote_settings = settings_for(args, redis.url, model, max_loaded_adapters=args.slots,
                                       torch_threads=1, worker_replicas=args.replicas,
                                       worker_num_cpus=os.cpu_count() / args.replicas)
        started = time.perf_counter()
        ray = await asyncio.to_thread(start_ray, remote_settings)
        print(f"Ray Serve up with {args.replicas} replicas in "
              f"{time.perf_counter() - started:.1f} s")
        remote = RemoteGenerator(RemoteConfig(address=None, app_name=remote_settings.ray_app))
        await remote.start()
        served_remote = await run_remote(args, remote, load)
        failover = await run_failover(args, ray, remote, load)
        await remote.close()
        ray.shutdown()
        await store.close()
        print(f"remote_ratio={served_remote['rate'] / local['rate']:.2f} "
              f"ttft_overhead_ms={served_remote['ttft'] - local['ttft']:.1f} "
              f"multiplex_hit={served_remote['hit']:.2f} "
              f"failover_failed={failover['failed']} recovered_s={failover['recovered']:.2f}")
    finally:
        redis.close()
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    return run_in_workdir(run, args, "bench-fleet-")


if __name__ == "__main__":
    sys.exit(main())
