"""`make demo` (`python -m trainer.demo`): the whole loop offline, no Discord token, no internet.

Import sample dialogues -> chat through the console twin (style, ratings, a taught reply) ->
one training cycle (search, gate, publish) while the chat goes on -> the engine hot-swaps the
new adapter -> the same questions answered before and after, with the numbers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import unicodedata
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from bot.core.config import SettingsError, load_settings
from bot.core.dialogue import Turn
from bot.core.fatal import run_main
from bot.core.redact import hide_secrets_in_logs
from bot.core.store import BASE_VERSION, Store
from bot.frontends.console import Console
from bot.runtime import Runtime
from trainer.cycle import run_cycle
from trainer.dataset import asked_key, validation_ids
from trainer.demo.cli import parse_args
from trainer.demo.prepare import MODEL_DIR, demo_model, demo_prefix, demo_redis
from trainer.importer import import_pairs, read_rows, validate_rows
from trainer.outcome import CycleOutcome

STYLE = "Answer as a polite support agent:"
DEMO_GUILD = 1  # the demo's one server (its keys live under a prefix of their own)
# (message typed in the console, what the moderator does with the bot's reply)
# Small talk the base model picked up in pretraining gets a thumbs up; support questions it
# cannot answer yet get a thumbs down or a taught reply.
SESSION = [
    ("What is your name?", "/rate up"),
    ("My order has not arrived yet.", "/rate down"),
    ("How do I reset my password?", "/teach Open the settings page, choose Security, then "
                                    "Reset password and follow the email we send you."),
    ("你叫什么名字？", "/rate up"),
    ("Thank you very much!", "/rate down"),
]
# Asked before and after training. The table marks a question whose sample dialogue the
# trainer held out for validation (the adapter never trained on its answer).
QUESTIONS = ["Hello, I need help.", "How do I reset my password?", "What are your opening hours?",
             "你们的营业时间是什么？", "谢谢你！", "Can I get a refund?"]
HELD_OUT = "*"
CHAT_INTERVAL_S = 2.0
CHAT_DURING_TRAINING = ["Is this product in stock?", "How much does shipping cost?",
                        "我想修改收货地址。", "Can I talk to a person?"]


def say(text: str = "") -> None:
    tqdm.write(text)  # keeps a running progress bar intact


def sample_rows() -> list:
    """The sample dialogues, in the demo's style (as the bot will be asked)."""
    text = resources.files("trainer").joinpath("data/customer_service.jsonl").read_text("utf-8")
    return [{"style": STYLE, **row} for _, row in read_rows(text)]


def held_out_questions(val_fraction: float) -> set[str]:
    """The sample questions whose dialogue the trainer keeps for validation, not training."""
    pairs = validate_rows(list(enumerate(sample_rows(), start=1)))
    ids = {p.exchange_id_in(DEMO_GUILD): p for p in pairs}
    keys = {i: asked_key([t.as_turn() for t in p.context] + [Turn("user", p.input)], p.style)
            for i, p in ids.items()}
    held = validation_ids(list(ids), val_fraction, keys)
    return {p.input for i, p in ids.items() if i in held}


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    if _width(text) <= width:
        return text + " " * (width - _width(text))
    out = ""
    for ch in text:
        if _width(out + ch) > width - 1:
            break
        out += ch
    return out + "…" + " " * (width - 1 - _width(out))


def table(headers: list[str], rows: list[list[str]], widths: list[int]) -> str:
    def line(cells):
        return "| " + " | ".join(_clip(c, w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def demo_settings(args, redis_url: str, model_name: str, workdir: Path):
    overrides = dict(
        redis_url=redis_url, key_prefix=demo_prefix(), model_name=model_name,
        reports_dir=workdir / "reports", min_new_ratings=0,
        temperature=0.0,  # greedy, so "before" and "after" differ only by the adapter
        max_new_tokens=24 if args.quick else 40,
        search_trials=2 if args.quick else 4,
        max_epochs=6 if args.quick else 12, early_stop_patience=2 if args.quick else 3,
        search_timeout_seconds=60 if args.quick else 150)
    if Path(model_name).name == MODEL_DIR:
        # The demo's tiny model (width 128): a wide LoRA on every linear layer and a bolder
        # learning rate than a real GPT-2 wants.
        overrides.update(search_lr_min=2e-3, search_lr_max=1.2e-2, lora_rank=16, lora_alpha=32,
                         lora_targets="c_attn,c_proj,c_fc")
    return load_settings(**overrides)


async def chat(console: Console, line: str) -> str:
    answer = await console.handle_line(line)
    say(f"  you> {line}")
    if answer:
        say("  " + answer.replace("\n", "\n  "))
    return answer


async def ask(console: Console, question: str) -> tuple[str, str]:
    """(reply, adapter version) for one question, outside the session's own history."""
    console.turns = []
    exchange_before = console.last
    await console.handle_line(question)
    if console.last is exchange_before:  # a failure: the console kept no exchange
        return "(no reply)", "-"
    return console.last.reply, console.last.adapter_version


async def chat_while_training(console: Console, serving: Callable[[], str], done: asyncio.Event,
                              swapped_to: list[str]) -> int:
    """Keep chatting during the cycle and until the new adapter serves; returns replies."""
    replies, n = 0, 0
    while not done.is_set() or (swapped_to and serving() != swapped_to[0]):
        question = CHAT_DURING_TRAINING[n % len(CHAT_DURING_TRAINING)]
        reply, version = await ask(console, question)
        say(f"  (chat during training) [{version}] {question} -> {_clip(reply, 40).strip()}")
        replies, n = replies + 1, n + 1
        await asyncio.sleep(CHAT_INTERVAL_S)
    return replies


async def train_while_chatting(settings, store: Store, console: Console,
                               serving: Callable[[], str]) -> CycleOutcome | None:
    """One training cycle while the chat goes on, until a promoted adapter serves; None (said)
    when it did not reach the engine in time."""
    done = asyncio.Event()
    swapped_to: list[str] = []
    chatter = asyncio.create_task(chat_while_training(console, serving, done, swapped_to))
    try:
        outcome = await run_cycle(settings, store, DEMO_GUILD, force=True, progress=True)
        if outcome.outcome == "promoted":
            swapped_to.append(outcome.version)
    finally:
        done.set()
    try:
        await asyncio.wait_for(chatter, timeout=120)
    except TimeoutError:
        say("  the new adapter did not reach the engine within 120 s")
        return None
    return outcome


def before_and_after(settings, questions: list[str], before: list[tuple[str, str]],
                     after: list[tuple[str, str]], old_version: str, new_version: str) -> str:
    """The questions' answers before and after the cycle, side by side, and what to read in
    them."""
    held_out = held_out_questions(settings.val_fraction)
    rows = [[HELD_OUT + q if q in held_out else q, b[0], a[0]]
            for q, b, a in zip(questions, before, after, strict=True)]
    lines = [table(["question", f"before [{old_version}]", f"after [{new_version}]"],
                   rows, [24, 38, 38])]
    if any(q in held_out for q in questions):
        lines.append(f"{HELD_OUT} held out for validation: the adapter never trained on this "
                     "answer.")
    if Path(settings.model_name).name == MODEL_DIR:
        lines.append("The demo's tiny model (about a million parameters, pretrained on a few "
                     "pages of text) picks up the\nsupport agent's words and tone from one "
                     "cycle, not whole answers; a pretrained GPT-2\n(MODEL_NAME=gpt2) is "
                     "expected to learn far more from the same data.")
    return "\n".join(lines)


async def run_demo(args, env) -> int:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    say("== The learning Discord bot, offline: import, chat, rate, train, hot-swap ==")
    if env.uses_dev_secret:
        say("User ids: USER_HASH_SECRET is not set, so the demo hashes them with the "
            "development value (fine here; `python -m bot run` refuses it).")
    model_name = demo_model(env.model_name, workdir, say, quick=args.quick)
    started = time.perf_counter()
    async with demo_redis(env, say) as redis_url:
        settings = demo_settings(args, redis_url, model_name, workdir)
        say(f"Keys of this run live under the prefix {settings.key_prefix!r} "
            "and are removed at the end.")
        store = Store.from_settings(settings)
        try:
            async with Runtime(settings, store=store) as runtime:
                return await _steps(settings, runtime, args, started)
        finally:
            if not args.keep:
                await store.delete_all_keys()
            await store.close()


async def _steps(settings, runtime: Runtime, args, started: float) -> int:
    store = runtime.store
    rows = sample_rows()
    result = await import_pairs(store.tenant(DEMO_GUILD), rows, settings)
    say(f"\n[1/5] Imported {result.stored} sample dialogues (English and Chinese) as rated "
        f"examples in the style {STYLE!r}; {result.duplicates} duplicate(s) skipped.")

    console = Console(runtime, guild_id=DEMO_GUILD)

    def serving() -> str:
        return runtime.router.version_for(DEMO_GUILD)

    say(f"\n[2/5] Chatting through the console twin (adapter {serving()}); "
        "a moderator rates and teaches:")
    await chat(console, f"/style set {STYLE}")
    for message, action in SESSION[: 3 if args.quick else None]:
        await chat(console, message)
        await chat(console, action)

    questions = QUESTIONS[: 3 if args.quick else None]
    before = [await ask(console, q) for q in questions]
    old_version = serving()

    say("\n[3/5] One training cycle: search learning rate x batch size, gate, publish. "
        "The chat goes on meanwhile:")
    outcome = await train_while_chatting(settings, store, console, serving)
    if outcome is None:
        return 1
    say(f"  cycle: {outcome.outcome} ({outcome.reason}); engine now serves "
        f"{serving()}")

    say(f"\n[4/5] The same questions, before ({old_version}) and after "
        f"({serving()}):")
    after = [await ask(console, q) for q in questions]
    say(before_and_after(settings, questions, before, after, old_version, serving()))

    say("\n[5/5] What the trainer measured:")
    say(summary(outcome, old_version))
    say(f"\nDone in {time.perf_counter() - started:.0f} s once the model was ready.")
    if args.json:
        print(json.dumps({**outcome.summary(), "before": before, "after": after,
                          "serving": serving(), "png": outcome.png_path}))
    return 0 if outcome.outcome in ("promoted", "rejected") else 1


def summary(outcome: CycleOutcome, old_version: str) -> str:
    def loss(key):
        value = outcome.val_loss.get(key)
        return "-" if value is None else f"{value:.4f}"

    old_name = "old (base)" if old_version == BASE_VERSION else f"old ({old_version})"
    rows = [["validation loss, base model", loss("base")],
            [f"validation loss, {old_name}", loss("active") if old_version != BASE_VERSION
             else loss("base")],
            [f"validation loss, new ({outcome.version or 'candidate'})", loss("candidate")],
            ["outcome", f"{outcome.outcome}: {outcome.reason}"],
            ["chosen learning rate", "-" if outcome.learning_rate is None
             else f"{outcome.learning_rate:.3g}"],
            ["chosen batch size", str(outcome.batch_size or "-")],
            ["trials", str(outcome.trials or "-")],
            ["loss curve PNG", outcome.png_path or "-"],
            ["report JSON", outcome.report_path or "-"]]
    return table(["what", "value"], rows, [36, 60])


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


def run(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never reaches for the hub
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("trainer").setLevel(logging.INFO)
    import transformers  # its per-load progress bars and length warnings are noise here

    transformers.logging.set_verbosity_error()
    # peft asks transformers a deprecated question on every fit; the user can do nothing about it.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated",
                            category=FutureWarning)
    transformers.logging.disable_progress_bar()
    try:
        env = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    hide_secrets_in_logs(env)
    return run_main(run_demo(args, env), env, "demo")


if __name__ == "__main__":
    sys.exit(main())
