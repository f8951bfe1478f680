"""Benchmark: how many search trials a GPT-2-small-sized model gets in the demo's budget.

    .venv/bin/python bench/search_budget.py [--budget 150] [--trials 4] [--epochs 12]
                                            [--patience 3] [--model DIR_OR_NAME]

Without --model it builds a model of GPT-2 small's shape (12 layers, width 768, 12 heads,
vocabulary 50,257, 124M parameters) with random weights and the tiny model's tokenizer:
the time per step is GPT-2's, no download needed. The data: the demo's sample dialogues
(trainer/data/customer_service.jsonl) as 👍-rated exchanges in the demo's style, plus two
👎 replies, built by trainer.dataset like a cycle does. It runs `trainer.tune.tuned_best_fit`
with the demo's settings (4 trials of up to 12 epochs, patience 3, a 150 s limit) and reports
the trials. The baseline is the search before issue 11, which checked the limit only between
trials: it ran trial 0 to its end (the issue measured one trial on this model), so its count
is 1. Last line: `trials=N trials_with_an_epoch=M budget_s=B seconds=S`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STYLE = "Answer as a polite support agent:"


def gpt2_small_shape(directory: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    from trainer.demo.tiny_model import build_tiny_model

    build_tiny_model(directory)  # for its tokenizer; the weights are replaced below
    config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                        bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


def rated_samples():
    from bot.core.store import Exchange, RatedExchange

    text = resources.files("trainer").joinpath("data/customer_service.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    # Fixed ids: the same train/validation split in every run.
    rated = [RatedExchange(exchange=Exchange(id=f"sample-{n}", tenant=1, user_message=r["input"],
                                             reply=r["output"], style=STYLE),
                           score=1, ratings=1, corrections=[]) for n, r in enumerate(rows)]
    rated += [RatedExchange(exchange=Exchange(id=f"down-{n}", tenant=1, user_message=r["input"],
                                              reply="A.", style=STYLE),
                            score=-1, ratings=1, corrections=[]) for n, r in enumerate(rows[:2])]
    return rated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--budget", type=int, default=150)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--patience", type=int, default=3)
    args = parser.parse_args()

    import torch

    from bot.core.config import load_settings
    from trainer.dataset import build_dataset
    from trainer.fit import load_base_model, load_tokenizer
    from trainer.search import SearchConfig
    from trainer.tune import tuned_best_fit

    with tempfile.TemporaryDirectory() as workdir:
        model_name = args.model or str(gpt2_small_shape(Path(workdir) / "gpt2-small-shape"))
        settings = load_settings(model_name=model_name, device="cpu", search_trials=args.trials,
                                 max_epochs=args.epochs, early_stop_patience=args.patience,
                                 search_timeout_seconds=args.budget, _env_file=None)
        tokenizer = load_tokenizer(model_name)
        data = build_dataset(rated_samples(), tokenizer, max_tokens=settings.max_train_tokens,
                             max_examples=settings.max_train_examples,
                             val_fraction=settings.val_fraction)
        base = load_base_model(model_name, "cpu")
        parameters = sum(p.numel() for p in base.parameters())
        started = time.monotonic()
        result = tuned_best_fit(base, data, SearchConfig.from_settings(settings),
                                pad_id=tokenizer.eos_token_id, progress=False, seed=0)
        seconds = time.monotonic() - started
    with_epoch = [t for t in result.trials if t["val_losses"]]
    print(f"model: {parameters / 1e6:.0f}M parameters, torch threads {torch.get_num_threads()}")
    print(f"data: {data.counts['train_examples']} train / "
          f"{data.counts['validation_examples']} validation examples")
    for t in result.trials:
        print(f"  trial {t['number']}: {t['state']:8s} lr {t['params']['learning_rate']:.2e} "
              f"batch {t['params']['batch_size']:2d} epochs {len(t['val_losses'])} "
              f"{t.get('reason') or ''}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"trials started: {len(result.trials)} (baseline 1, ratio {len(result.trials):.1f}x); "
          f"with at least one epoch: {len(with_epoch)}; seconds {seconds:.0f} of {args.budget}")
    print(f"trials={len(result.trials)} trials_with_an_epoch={len(with_epoch)} "
          f"budget_s={args.budget} seconds={seconds:.0f}")


if __name__ == "__main__":
    main()
