"""Benchmark: the preference epochs' defaults against SFT alone, one simulated rating round.

    .venv/bin/python bench/preference_defaults.py [--workdir .demo] [--model DIR_OR_NAME]

Base model: the demo's pretrained tiny GPT-2 (built once in --workdir, as `make demo` does), or
--model. The demo's sample dialogues are split by prompt (the trainer's hash split, 30 %
held out, never rated). A simulated moderator rates the base model's greedy reply to each pool
prompt by chrF (sacrebleu) against the sample answer: 👍 at or above the score that about a
quarter of the base replies reach, 👎 below, and every third 👎 is taught the sample answer.
Then `trainer.tune.tuned_best_fit` (the demo's search settings, seed 0) trains one adapter per
variant on the same data: SFT alone (DPO_WEIGHT=KTO_WEIGHT=0, the baseline), the defaults
(one preference epoch at a quarter of the winner's rate), the preference epoch at the full
rate, and two preference epochs. Each is scored on the held-out prompts: mean chrF and the
share of replies at or above the 👍 threshold. Few prompts: read differences as rough.
Last line: `sft_share=A default_share=B full_rate_share=C two_epochs_share=D heldout=N`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STYLE = "Answer as a polite support agent:"
VARIANTS = {"sft": {"dpo_weight": 0.0, "kto_weight": 0.0}, "default": {},
            "full_rate": {"preference_lr_factor": 1.0}, "two_epochs": {"preference_epochs": 2}}


# The demo's search settings: every variant trains with them.
DEMO_SEARCH = dict(device="cpu", search_trials=4, max_epochs=12, early_stop_patience=3,
                   search_timeout_seconds=150, search_lr_min=2e-3, search_lr_max=1.2e-2,
                   lora_rank=16, lora_alpha=32, lora_targets="c_attn,c_proj,c_fc",
                   _env_file=None)


def split_samples() -> tuple[list[tuple[str, dict]], list[dict]]:
    """The demo's sample dialogues by the trainer's hash split: the pool (id, row) the
    moderator rates, and the held-out rows never rated."""
    from trainer.dataset import validation_ids

    text = resources.files("trainer").joinpath("data/customer_service.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    ids = [f"sample-{n}" for n in range(len(rows))]
    held = validation_ids(ids, 0.3)
    pool = [(i, r) for i, r in zip(ids, rows, strict=True) if i not in held]
    test = [r for i, r in zip(ids, rows, strict=True) if i in held]
    return pool, test


def greedy_reply(model, tokenizer, question: str) -> str:
    import torch

    from bot.core.dialogue import build_prompt, extract_reply
    from bot.core.store import Exchange

    turns = Exchange(tenant=1, user_message=question, reply="", style=STYLE).turns()
    encoded = tokenizer(build_prompt(turns, STYLE, tokenizer, 200), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=40, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
    return extract_reply(tokenizer.decode(out[0, encoded.input_ids.shape[1]:]),
                         tokenizer.eos_token)


def chrf(hypothesis: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_chrf(hypothesis, [reference]).score


def simulated_ratings(pool, replies: list[str], scores: list[float], threshold: float) -> list:
    """👍 at or above `threshold`, 👎 below; every third 👎 is taught the sample answer."""
    from bot.core.store import Exchange, RatedExchange
    from bot.core.store.records import Correction

    rated, downs = [], 0
    for (i, r), text, score in zip(pool, replies, scores, strict=True):
        corrections = []
        if score < threshold:
            downs += 1
            if downs % 3 == 0:
                corrections = [Correction(exchange_id=i, moderator_hash="m", text=r["output"])]
        exchange = Exchange(id=i, tenant=1, user_message=r["input"], reply=text, style=STYLE)
        rated.append(RatedExchange(exchange=exchange, score=1 if score >= threshold else -1,
                                   ratings=1, corrections=corrections))
    return rated


def train_variant(base, tokenizer, rated: list, settings):
    """The data set of `rated` and the tuned best fit on it, as a cycle would make them."""
    from trainer.dataset import build_dataset
    from trainer.search import SearchConfig
    from trainer.tune import tuned_best_fit

    data = build_dataset(rated, tokenizer, max_tokens=settings.max_train_tokens,
                         max_examples=settings.max_train_examples, val_fraction=0.2)
    result = tuned_best_fit(base, data, SearchConfig.from_settings(settings),
                            pad_id=tokenizer.eos_token_id, progress=False, seed=0)
    return data, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(ROOT / ".demo"))
    parser.add_argument("--model", default="no-such-model")
    args = parser.parse_args()

    from bot.core.config import load_settings
    from trainer.demo.prepare import demo_model
    from trainer.evaluate import with_adapter
    from trainer.fit import load_base_model, load_tokenizer

    name = demo_model(args.model, Path(args.workdir), print)
    tokenizer, base = load_tokenizer(name), load_base_model(name, "cpu")
    pool, test = split_samples()
    replies = [greedy_reply(base, tokenizer, r["input"]) for _, r in pool]
    scores = [chrf(h, r["output"]) for h, (_, r) in zip(replies, pool, strict=True)]
    threshold = sorted(scores, reverse=True)[max(0, len(scores) // 4 - 1)]

    def evaluate(model) -> tuple[float, float]:
        got = [chrf(greedy_reply(model, tokenizer, r["input"]), r["output"]) for r in test]
        return statistics.mean(got), sum(s >= threshold for s in got) / len(got)

    rated = simulated_ratings(pool, replies, scores, threshold)
    base_chrf, base_share = evaluate(base)
    print(f"pool {len(pool)} prompts, held out {len(test)}; 👍 threshold chrF {threshold:.1f}")
    print(f"base: chrF {base_chrf:.2f}, 👍 share {base_share:.2f}")
    shares = {}
    for variant, extra in VARIANTS.items():
        settings = load_settings(model_name=name, **DEMO_SEARCH, **extra)
        data, result = train_variant(base, tokenizer, rated, settings)
        mean, shares[variant] = evaluate(with_adapter(base, result.best.adapter, "cpu"))
        ratio = f"{shares[variant] / shares['sft']:.2f}x SFT's share" if shares["sft"] else "-"
        print(f"{variant}: chrF {mean:.2f}, 👍 share {shares[variant]:.2f} ({ratio}); "
              f"data {data.counts['positives']} 👍, {data.counts['undesirable']} 👎, "
              f"{data.counts['pairs']} pairs; lr {result.best_params['learning_rate']:.2e}")
    print(" ".join(f"{v}_share={s:.2f}" for v, s in shares.items()) + f" heldout={len(test)}")


if __name__ == "__main__":
    main()
