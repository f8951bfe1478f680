"""Benchmark: what the learning benches' held-out 👍 share rewards on a data set, with no
training at all.

    .venv/bin/python bench/share_ceiling.py [--data support|chitchat] [--model DIR] [--json]

The learning benches' moderator (`bench/moderator.py`) likes a reply whose sentence chrF against
the prompt's one reference reaches a bar calibrated on the base model. This bench calibrates
that bar exactly as `bench/learning_loop.py` does (the base model's pool replies through the
engine), then scores, on the held-out prompts, replies that answer nothing:

- constant: one pool reference, the one that passes the most pool references of its script,
  given as the reply to every held-out prompt of that script;
- retrieval: the reference of the pool prompt nearest to the held-out prompt (chrF of prompts),
  a bot that memorised the pool and never generalised;
- base, longer: the base model's greedy reply (the engine's repetition penalty) forced to run
  at least N tokens (`min_new_tokens`), no adapter: what reply length alone buys.

A constant share near 1 means any fluent sentence of the data set's kind passes: the share then
measures fluency and length, not an answer to the prompt. Each row gives the matched share too
(`bench/moderator.py` `matched`; about 0.1 for replies that answer nothing in particular).
Last line: `constant_share=A retrieval_share=B base_share=C longer_base_share=D` (D at the
longest N).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import learning_loop as loop  # noqa: E402  (bench/learning_loop.py)
from moderator import chrf, matched_share, script  # noqa: E402

MIN_TOKENS = (0, 16, 32)  # the base model's replies run at least this many tokens


def constant_replies(bench) -> list[str]:
    """For each held-out prompt, the pool reference of its script that passes the most pool
    references of that script."""
    best = {}
    for name in bench.bar.thresholds:
        rows = [r for r in bench.pool if script(r["input"]) == name]
        best[name] = max((r["output"] for r in rows), key=lambda reply: sum(
            bench.bar.likes(row, chrf(reply, row["output"])) for row in rows))
    return [best[script(row["input"])] for row in bench.held]


def retrieved_replies(bench) -> list[str]:
    """For each held-out prompt, the reference of the pool prompt nearest to it."""
    return [max(bench.pool, key=lambda r: chrf(row["input"], r["input"]))["output"]
            for row in bench.held]


def longer_base_replies(bench, min_tokens: int) -> list[str]:
    """The base model's greedy replies to the held-out prompts (as the gate asks them), at
    least `min_tokens` long."""
    from bot.core.dialogue import Turn
    from trainer.exam import Reference
    from trainer.quality import greedy_replies

    refs = [Reference(str(n), [Turn("user", row["input"])], None, row["output"])
            for n, row in enumerate(bench.held)]
    return greedy_replies(bench.base_model, bench.tokenizer, refs,
                          max_new_tokens=max(bench.settings.max_new_tokens, min_tokens),
                          repetition_penalty=bench.settings.repetition_penalty, device="cpu",
                          min_new_tokens=min_tokens)


def scored(bench, label: str, replies: list[str]) -> dict:
    scores = [chrf(reply, row["output"]) for reply, row in zip(replies, bench.held, strict=True)]
    found = {"share": bench.bar.share(bench.held, scores),
             "shares": bench.bar.shares(bench.held, scores),
             "chars": sum(map(len, replies)) / len(replies), "example": replies[0],
             "matched": matched_share(replies, bench.held)}
    loop.say(f"| {label} | {found['share']:.3f} | {loop.by_script(found)} | "
             f"{loop.matched_text(found)} | {found['chars']:.0f} | {found['example'][:60]!r} |")
    return found


async def main_async(args) -> int:
    async with loop.calibrated_bench(args) as (bench, base):
        found = ceiling(bench, base)
    loop.say(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        loop.say(json.dumps(found, ensure_ascii=False))
    loop.say(f"constant_share={found['constant']['share']:.3f} "
             f"retrieval_share={found['retrieval']['share']:.3f} "
             f"base_share={base['share']:.3f} "
             f"longer_base_share={found[f'base, >= {MIN_TOKENS[-1]} tokens']['share']:.3f}")
    return 0


def ceiling(bench, base: dict) -> dict:
    """Every row of the table, printed as it is measured."""
    loop.say("")
    loop.say("| held-out replies | 👍 share | by script | matched | mean characters | "
             "first reply |")
    loop.say("|---|---|---|---|---|---|")
    found = {"base (engine)": {key: base[key] for key in ("share", "shares", "matched")}}
    loop.say(f"| base (engine) | {base['share']:.3f} | {loop.by_script(base)} | "
             f"{loop.matched_text(base)} | | |")
    found["constant"] = scored(bench, "constant", constant_replies(bench))
    found["retrieval"] = scored(bench, "retrieval", retrieved_replies(bench))
    for tokens in MIN_TOKENS:
        found[f"base, >= {tokens} tokens"] = scored(bench, f"base, >= {tokens} tokens",
                                                    longer_base_replies(bench, tokens))
    return found


def main(argv: list[str] | None = None) -> int:
    args = loop.bench_parser(__doc__).parse_args(argv)
    return loop.run_offline(main_async, args)


if __name__ == "__main__":
    sys.exit(main())
