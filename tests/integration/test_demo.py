"""`make demo` in its smaller mode: the whole loop offline, as a new user would run it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import redis

from bot.core.local_redis import free_port
from trainer.demo.prepare import MODEL_DIR, PRETRAIN_STEPS, tiny_demo_model

# For hangs only: the quick demo takes a few minutes on a loaded 2-core machine (its model is
# pretrained beforehand, by the pretrained_model_dir fixture).
DEMO_TIMEOUT_S = 1200


def _run_demo(tmp_path: Path, **env) -> subprocess.CompletedProcess:
    # SEARCH_SEED pinned, as in every test's settings (tests/conftest.py): with the clock's
    # seed the demo's two trials land in the outer tenth of its learning-rate range about one
    # run in five, and the search rightly warns that the best sits at the edge.
    full_env = {**os.environ, "USER_HASH_SECRET": "demo-test", "SEARCH_SEED": "0", **env}
    return subprocess.run([sys.executable, "-m", "trainer.demo", "--quick", "--json",
                           "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, env=full_env,
                          cwd=tmp_path)


def _check_outcome(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["outcome"] in ("promoted", "rejected")
    assert len(summary["before"]) == len(summary["after"]) == 3
    assert all(version == "base" for _, version in summary["before"])
    if summary["outcome"] == "promoted":
        # The engine hot-swapped the new adapter, and the "after" answers came from it.
        assert summary["serving"] == summary["version"]
        assert all(version == summary["version"] for _, version in summary["after"])
        assert Path(summary["png"]).read_bytes().startswith(b"\x89PNG")
    for step in ("[1/5] Imported 36", "[2/5]", "/style set", "/rate up", "/rate down",
                 "/teach", "[3/5]", "[4/5]", "[5/5]", "chosen learning rate",
                 "chosen batch size", "loss curve PNG"):
        assert step in result.stdout, step
    return summary


def test_demo_without_redis_or_model_starts_its_own_redis_and_uses_its_tiny_model(
        tmp_path, pretrained_model_dir):
    # Its workdir holds the tiny model as an earlier run left it (built in this test run or
    # an earlier one: see test_the_demo_builds_its_tiny_model_once_and_says_so).
    shutil.copytree(pretrained_model_dir, tmp_path / "work" / MODEL_DIR)
    result = _run_demo(tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                       MODEL_NAME="no-such-model-here")
    summary = _check_outcome(result)
    assert "starting a private redis-server" in result.stdout
    assert "'no-such-model-here' cannot be loaded offline; using the tiny GPT-2" in result.stdout
    # The same recipe as the fixture's: no rebuild.
    assert f"pretrained earlier for {PRETRAIN_STEPS['quick']} steps" in result.stdout
    assert (tmp_path / "work" / "tiny-gpt2" / "model.safetensors").exists()
    # On the pretrained demo model the loop really learns: the new adapter is clearly better
    # on the held-out dialogues than the base model, so it is promoted.
    losses = summary["val_loss"]
    assert losses["candidate"] < losses["base"] - 0.2, losses
    assert summary["outcome"] == "promoted"
    assert "warn" not in result.stdout.lower() + result.stderr.lower()


def test_the_demo_builds_its_tiny_model_once_and_says_so(tmp_path):
    """Without a model that loads offline the demo builds and pretrains its tiny GPT-2 in its
    workdir, and a second run with the same recipe takes it from there (a few steps here: the
    full pretraining runs once per test run, for pretrained_model_dir)."""
    said: list[str] = []
    built = tiny_demo_model(tmp_path / "work", said.append, steps=3,
                            instead_of="no-such-model-here")
    assert "building a tiny GPT-2" in said[0] and "pretraining it for" in said[0]
    assert (tmp_path / "work" / "tiny-gpt2" / "model.safetensors").exists()
    assert built == str(tmp_path / "work" / MODEL_DIR)
    said.clear()
    assert tiny_demo_model(tmp_path / "work", said.append, steps=3,
                           instead_of="no-such-model-here") == built
    assert len(said) == 1 and "pretrained earlier for 3 steps" in said[0]
    assert tiny_demo_model(tmp_path / "work", said.append, steps=4) == built  # another recipe
    assert "building a tiny GPT-2" in said[1]


def _runs(text: str, size: int, words: bool) -> set:
    """Every run of `size` words (or non-space characters) in `text`."""
    items = re.findall(r"\w+", text.lower()) if words else [c for c in text if not c.isspace()]
    return {tuple(items[i:i + size]) for i in range(len(items) - size + 1)}


def test_the_demo_models_pretraining_text_holds_none_of_the_sample_answers():
    from trainer.demo.pretrain import pretrain_text
    from trainer.demo.run import sample_rows

    text = pretrain_text()
    english, chinese = _runs(text, 5, words=True), _runs(text, 5, words=False)
    for row in sample_rows():
        answer = row["output"]
        assert answer not in text
        if re.search(r"[\u4e00-\u9fff]", answer):
            assert not _runs(answer, 5, words=False) & chinese, answer
        else:
            assert not _runs(answer, 5, words=True) & english, answer
        assert row["input"] in text  # the questions are in it: the base model may read them


def test_demo_uses_a_redis_that_answers_and_cleans_up_after_itself(tmp_path, redis_server,
                                                                   tiny_model_dir):
    result = _run_demo(tmp_path, REDIS_URL=redis_server.url, MODEL_NAME=str(tiny_model_dir))
    _check_outcome(result)
    assert "using the server at REDIS_URL" in result.stdout
    assert f"Model: {tiny_model_dir}" in result.stdout
    client = redis.Redis.from_url(redis_server.url)
    assert list(client.scan_iter(match="demo-*")) == []
    client.close()
