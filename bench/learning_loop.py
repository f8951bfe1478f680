"""Benchmark: does the bot learn from its moderators? A simulated moderator, the real bot path.

    .venv/bin/python bench/learning_loop.py [--model DIR_OR_NAME] [--rounds 3] [--quick]
                                            [--data support|chitchat]

Data (--data): trainer/data/support_dialogues.jsonl (English and Chinese support prompts with
reference replies, written for the project; the default) or chitchat_dialogues.jsonl (everyday
chit-chat with short answers, English and Chinese, written for the project), split by a hash
of the prompt into a pool and a held-out set (HELD_OUT_FRACTION). Held-out prompts are never
rated, taught or imported.

Base model: the demo's tiny GPT-2, built and pretrained once by the demo's own helpers
(`trainer.demo.prepare.demo_model`, cached in --workdir; its pretraining text holds none of
these replies), or --model. A private redis-server (`bot.core.local_redis`), the demo's training
settings, greedy replies (TEMPERATURE=0) so a reply depends on the adapter only.

- Calibration: the base model answers the pool; the moderator's 👍 bar (`bench/moderator.py`)
  is, for the pool's English prompts and for its Chinese ones apart, the chrF that ~25 % of
  the base model's replies in that language reach (one bar for both liked half the English
  replies and no Chinese one).
- Moderation loop, `--rounds` rounds: the bot answers every pool prompt through the real
  conversation path (`bot.runtime.Runtime` -> `Conversation.chat`, stored exchanges, the
  adapter in service); the moderator scores each reply with chrF against its reference and
  rates it through `bot.service.actions.Actions` (👍 at or above the bar, else 👎, and
  for every third 👎 teaches the reference); then one `trainer.cycle.run_cycle`, and the
  engine swaps in what the gate promoted. After each round, on the held-out prompts: the
  share of greedy replies the moderator would 👍, their mean chrF, the reference NLL
  (nats per reply token) under the adapter in service, and the matched share
  (`bench/moderator.py` `matched`: replies closer to their own prompt's reference than to 90 %
  of the other prompts' references; about 0.1 for replies that answer nothing in particular,
  however long or fluent they are, where the 👍 share rewards length and fluency).
  The loop runs twice in the same run, each on fresh keys: SFT only (DPO_WEIGHT=0,
  KTO_WEIGHT=0) and with the preference objective at its defaults.
- Import only: the pool imported as rated pairs (`trainer.importer`), one cycle, held-out share
  before and after.

Ratios are against the base model's held-out share, measured in the same run. The last line
reads `import_share=A base_share=B sft_share=C pref_share=D rounds=N`.
--quick: a small pool, one round, a short search (a smoke test on the tiny model).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sys
import time
import warnings
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from moderator import Bar, chrf, matched_share  # noqa: E402  (bench/moderator.py)

GUILD = 1
MODERATOR = "bench-moderator"
USER = "bench-user"
HELD_OUT_FRACTION = 0.2
TEACH_EVERY = 3  # the moderator teaches the reference for every third 👎
CONCURRENT = 32  # requests in flight at once (below QUEUE_MAX)
SWAP_TIMEOUT_S = 120


def say(text: str = "") -> None:
    print(text, flush=True)


DATA_SETS = {"support": "support_dialogues.jsonl", "chitchat": "chitchat_dialogues.jsonl"}


def load_rows(data: str = "support") -> list[dict]:
    from trainer.importer import parse_rows, read_text

    path = resources.files("trainer").joinpath(f"data/{DATA_SETS[data]}")
    return [row for _, row in parse_rows(read_text(path))[0]]


def held_out(prompt: str) -> bool:
    digest = hashlib.sha256(prompt.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HELD_OUT_FRACTION


class Bench:
    """What every part shares: the redis URL, the base model for NLL, the 👍 bar."""

    def __init__(self, args, redis_url: str, model_name: str, workdir: Path):
        from trainer.demo.run import demo_settings
        from trainer.fit import load_base_model, load_tokenizer

        self.args, self.redis_url, self.workdir = args, redis_url, workdir
        demo_args = SimpleNamespace(quick=args.quick)
        self.settings = demo_settings(demo_args, redis_url, model_name, workdir).model_copy(
            update={"home_guild_id": GUILD, "min_new_ratings": 0, "queue_max": 64,
                    "cooldown_seconds": 0.0})
        if args.quick:
            self.settings = self.settings.model_copy(update={
                "search_trials": 2, "max_epochs": 4, "search_timeout_seconds": 40,
                "max_new_tokens": 24, "gate_max_prompts": 16})
        self.tokenizer = load_tokenizer(model_name)
        self.base_model = load_base_model(model_name, "cpu")
        rows = load_rows(args.data)
        self.pool = [r for r in rows if not held_out(r["input"])]
        self.held = [r for r in rows if held_out(r["input"])]
        if args.quick:
            self.pool, self.held = self.pool[:48], self.held[:16]
        self.bar: Bar | None = None
        self.base_numbers: dict | None = None  # the base model's held-out numbers

    def fresh(self, **overrides):
        """Settings on keys of their own (a fresh bot) with `overrides`."""
        from trainer.demo.prepare import demo_prefix

        return self.settings.model_copy(update={"key_prefix": demo_prefix(), **overrides})

    async def replies(self, runtime, rows: list[dict]) -> list[str]:
        """Greedy replies of the adapter serving GUILD, straight from the engine (not stored)."""
        from bot.core.dialogue import Turn

        version = runtime.router.version_for(GUILD)
        gate = asyncio.Semaphore(CONCURRENT)

        async def one(row):
            async with gate:
                generation = await runtime.generator.generate([Turn("user", row["input"])],
                                                              adapter=version)
                return generation.text

        return list(await asyncio.gather(*(one(r) for r in rows)))

    def nll(self, blob: bytes | None, rows: list[dict]) -> float:
        from bot.core.dialogue import Turn
        from trainer.dataset import example_from
        from trainer.evaluate import evaluate_adapter

        examples = [example_from(str(i), "reply", [Turn("user", r["input"])], None,
                                 r["output"], self.tokenizer, self.settings.max_train_tokens)
                    for i, r in enumerate(rows)]
        return evaluate_adapter(self.base_model, blob, examples, device="cpu",
                                micro_batch_size=self.settings.micro_batch_size,
                                pad_id=self.tokenizer.eos_token_id)

    async def held_out_numbers(self, runtime) -> dict:
        """Held-out share, chrF and NLL of the version serving GUILD. The base model's are
        measured once (`calibrate`): through the engine's batches the same model's greedy
        replies differ by a prompt or two from one measurement to the next (batch make-up),
        and a refused candidate leaves the base model serving."""
        from bot.core.store import BASE_VERSION

        if runtime.router.version_for(GUILD) == BASE_VERSION and self.base_numbers:
            return dict(self.base_numbers)
        replies = await self.replies(runtime, self.held)
        scores = [chrf(reply, row["output"]) for reply, row in zip(replies, self.held,
                                                                   strict=True)]
        version = runtime.router.version_for(GUILD)
        blob = None if version == BASE_VERSION else \
            await runtime.store.tenant(GUILD).registry.blob(version)
        nll = await asyncio.to_thread(self.nll, blob, self.held)
        return {"version": version, "share": self.bar.share(self.held, scores),
                "shares": self.bar.shares(self.held, scores),
                "chrf": sum(scores) / len(scores), "nll": nll,
                "matched": matched_share(replies, self.held)}

    async def calibrate(self) -> dict:
        """The 👍 bar from the base model's pool replies; the base's held-out numbers."""
        from bot.runtime import Runtime

        async with Runtime(self.fresh()) as runtime:
            replies = await self.replies(runtime, self.pool)
            scores = [chrf(reply, row["output"]) for reply, row in zip(replies, self.pool,
                                                                       strict=True)]
            self.bar = Bar.calibrate(self.pool, scores)
            base = await self.held_out_numbers(runtime)
            self.base_numbers = base
        say(f"calibration: 👍 at {self.bar.describe()}: {self.bar.share(self.pool, scores):.3f}"
            f" of the base model's {len(scores)} pool replies pass")
        return base


async def moderate(bench: Bench, runtime, answered: list | None = None) -> dict:
    """The bot answers every pool prompt through the conversation path; the moderator rates
    each stored exchange (and teaches every third 👎) through the actions moderators use.
    `answered`, when given, receives each (row, stored exchange)."""
    from bot.core.dialogue import Turn
    from bot.frontends.console import ConsoleSink
    from bot.service.drafts import Failure

    gate = asyncio.Semaphore(CONCURRENT)

    async def answer(row):
        async with gate:
            return await runtime.conversation.reply([Turn("user", row["input"])], ConsoleSink(),
                                                    source="console", user_id=USER,
                                                    guild_id=GUILD, channel_id=None)

    results = await asyncio.gather(*(answer(r) for r in bench.pool))
    counts = {"up": 0, "down": 0, "taught": 0, "failed": 0}
    for row, exchange in zip(bench.pool, results, strict=True):
        if isinstance(exchange, Failure):
            counts["failed"] += 1
            continue
        if answered is not None:
            answered.append((row, exchange))
        liked = bench.bar.likes(row, chrf(exchange.reply, row["output"]))
        answer = await runtime.actions.rate(GUILD, exchange.id, MODERATOR, 1 if liked else -1)
        if not answer.ok:
            raise RuntimeError(f"a rating was not stored: {answer.text}")
        counts["up" if liked else "down"] += 1
        if not liked and counts["down"] % TEACH_EVERY == 0:
            taught = await runtime.actions.teach(GUILD, exchange.id, MODERATOR, row["output"])
            if not taught.ok:
                raise RuntimeError(f"a taught reply was not stored: {taught.text}")
            counts["taught"] += 1
    return counts


async def cycle(bench: Bench, settings, runtime):
    """One training cycle; waits until the engine serves what it promoted."""
    from trainer.cycle import run_cycle

    outcome = await run_cycle(settings, runtime.store, GUILD, force=True, progress=False)
    if outcome.outcome == "promoted":
        waited = time.monotonic()
        while runtime.router.version_for(GUILD) != outcome.version:
            if time.monotonic() - waited > SWAP_TIMEOUT_S:
                raise RuntimeError(f"{outcome.version} did not reach the engine")
            await asyncio.sleep(0.2)
    return outcome


def describe(outcome) -> str:
    gate = outcome.gate
    numbers = ", ".join(f"{k} {gate[k]}" for k in ("chrf_base", "chrf_active", "chrf_candidate",
                                                   "preference_accuracy_candidate")
                        if gate.get(k) is not None)
    return f"{outcome.outcome} {outcome.version or ''} [{numbers}] {outcome.reason[:160]}"


async def run_loop(bench: Bench, name: str, rounds: int, **overrides) -> list[dict]:
    from bot.runtime import Runtime

    settings = bench.fresh(**overrides)
    found = []
    async with Runtime(settings) as runtime:
        for number in range(1, rounds + 1):
            started = time.perf_counter()
            counts = await moderate(bench, runtime)
            outcome = await cycle(bench, settings, runtime)
            numbers = await bench.held_out_numbers(runtime)
            found.append({**numbers, **counts, "outcome": outcome.outcome,
                          "seconds": round(time.perf_counter() - started, 1)})
            say(f"{name} round {number}: 👍 {counts['up']} 👎 {counts['down']} taught "
                f"{counts['taught']} | cycle {describe(outcome)}")
            say(f"{name} round {number}: held-out {summary(numbers)} [{numbers['version']}] "
                f"({found[-1]['seconds']:.0f} s)")
    return found


def by_script(numbers: dict) -> str:
    """The held-out 👍 share within each script of prompt ("Latin 0.85, CJK 0.07")."""
    return ", ".join(f"{name} {value:.2f}" for name, value in numbers["shares"].items())


def summary(numbers: dict) -> str:
    return (f"👍 share {numbers['share']:.3f} ({by_script(numbers)}), chrF "
            f"{numbers['chrf']:.2f}, reference NLL {numbers['nll']:.3f}, matched "
            f"{matched_text(numbers)}")


def matched_text(numbers: dict) -> str:
    """The matched share, in all and by script ("0.130 (CJK 0.07, Latin 0.19)")."""
    found = numbers["matched"]
    return f"{found['all']:.3f} (" + ", ".join(
        f"{name} {value:.2f}" for name, value in found.items() if name != "all") + ")"


async def run_import(bench: Bench) -> dict:
    from bot.runtime import Runtime
    from trainer.importer import import_pairs

    settings = bench.fresh()
    async with Runtime(settings) as runtime:
        rows = [{"input": r["input"], "output": r["output"]} for r in bench.pool]
        await import_pairs(runtime.store.tenant(GUILD), rows, settings)
        outcome = await cycle(bench, settings, runtime)
        after = await bench.held_out_numbers(runtime)
    say(f"import: {len(rows)} pool pairs, cycle {describe(outcome)}")
    say(f"import: held-out {summary(after)} [{after['version']}]")
    return after


@contextlib.asynccontextmanager
async def calibrated_bench(args):
    """The learning benches' start: the model (the demo's, pretrained once in --workdir, or
    --model), a private redis-server for the run, the 👍 bar calibrated. Yields (bench, the
    base model's held-out numbers)."""
    from bot.core.local_redis import LocalRedis
    from trainer.demo.prepare import demo_model

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model_name = args.model or demo_model("(no --model)", workdir, say, quick=args.quick)
    server = LocalRedis().start()
    try:
        bench = Bench(args, server.url, model_name, workdir)
        say(f"model {model_name}; data {args.data}; {len(bench.pool)} pool / "
            f"{len(bench.held)} held-out prompts; load average {os.getloadavg()[0]:.2f}")
        yield bench, await bench.calibrate()
    finally:
        server.close()


async def main_async(args) -> int:
    async with calibrated_bench(args) as (bench, base):
        say(f"base: held-out {summary(base)}")
        imported = await run_import(bench)
        sft = await run_loop(bench, "sft", args.rounds, dpo_weight=0.0, kto_weight=0.0)
        pref = await run_loop(bench, "pref", args.rounds)
    base_share = base["share"]
    say("")
    say("| run | held-out 👍 share | vs base | by script | chrF | reference NLL | matched |")
    say("|---|---|---|---|---|---|---|")
    rows = [("base", base), ("import, 1 cycle", imported)]
    rows += [(f"sft round {n}", r) for n, r in enumerate(sft, start=1)]
    rows += [(f"pref round {n}", r) for n, r in enumerate(pref, start=1)]
    for label, r in rows:
        ratio = r["share"] / base_share if base_share else float("nan")
        say(f"| {label} | {r['share']:.3f} | {ratio:.2f}x | {by_script(r)} | {r['chrf']:.2f} "
            f"| {r['nll']:.3f} | {matched_text(r)} |")
    say(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        say(json.dumps({"base": base, "import": imported, "sft": sft, "pref": pref}))
    say(f"import_share={imported['share']:.3f} base_share={base_share:.3f} "
        f"sft_share={sft[-1]['share']:.3f} pref_share={pref[-1]['share']:.3f} "
        f"rounds={args.rounds}")
    return 0


def bench_parser(description: str) -> argparse.ArgumentParser:
    """The options of the learning-loop benches (this one and bench/poisoning.py)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="base model (default: the demo's tiny "
                                                      "GPT-2, pretrained once in --workdir)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--workdir", default=str(ROOT / ".bench"),
                        help="where the tiny model and the reports go (default .bench)")
    parser.add_argument("--json", action="store_true", help="print every number as JSON too")
    parser.add_argument("--data", choices=sorted(DATA_SETS), default="support",
                        help="the dialogues the moderator and the held-out prompts come from: "
                             "support (default) or chitchat (short everyday answers)")
    return parser


def run_offline(main_async, args) -> int:
    """Run `main_async(args)` without the network, with only warnings of our own and no
    progress bars between the bench's lines."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    return asyncio.run(main_async(args))


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (1 with --quick)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    return run_offline(main_async, args)


if __name__ == "__main__":
    sys.exit(main())
