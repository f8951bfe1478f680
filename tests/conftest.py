"""Shared fixtures: a private redis-server per test session, a fresh key prefix per test, the
offline tiny GPT-2 and adapter blobs for it, and the demo's pretrained tiny GPT-2."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest
import redis.asyncio as aioredis
from paths import REPO
from store_util import TENANT

from bot.core.config import load_settings
from bot.core.local_redis import LocalRedis
from bot.core.store import Store

TEST_SECRET = "test-secret-for-hmac"
# Pretrained models kept between test runs, one folder per recipe digest.
PRETRAINED_CACHE = REPO / ".cache" / "pretrained"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = LocalRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.close()


@pytest.fixture
def key_prefix() -> str:
    """Each test gets its own key space in the shared server."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def settings(redis_server, key_prefix, tiny_model_dir, tmp_path):
    return load_settings(redis_url=redis_server.url, key_prefix=key_prefix,
                         model_name=str(tiny_model_dir), device="cpu",
                         # float32 everywhere: exact comparisons must not depend on the CPU
                         model_dtype="float32",
                         # one seed for every cycle: a test's training must not vary by the clock
                         search_seed=0,
                         user_hash_secret=TEST_SECRET, reports_dir=tmp_path / "reports",
                         home_guild_id=TENANT, _env_file=None)


@pytest.fixture
def fast(settings):
    """Settings for quick replies: 8 new tokens, no cooldown."""
    return settings.model_copy(update={"max_new_tokens": 8, "cooldown_seconds": 0})


@pytest.fixture
async def engine(fast, store):
    """The real engine on the tiny model, with `fast` settings; its adapters come from the
    store's registry."""
    from bot.engine.engine import Engine

    engine = Engine.from_settings(fast, store.registry.blob)
    await engine.start()
    yield engine
    await engine.close()


@pytest.fixture
async def runtime(fast, store, engine):
    """What a serving process builds (router, conversation, actions, ...), on this test's store
    and engine, following the registry."""
    from bot.runtime import Runtime

    async with Runtime(fast, store=store, generator=engine) as runtime:
        yield runtime


@pytest.fixture
async def fake_runtime(fast, store):
    """The runtime on a FakeGenerator (tests/fake_generator.py), whose replies a test
    scripts: `fake_runtime.generator.script(pieces, ...)`."""
    from fake_generator import FakeGenerator

    from bot.core.generation import GenerationConfig
    from bot.runtime import Runtime

    generator = FakeGenerator(GenerationConfig.from_settings(fast), store.registry.blob)
    async with Runtime(fast, store=store, generator=generator) as runtime:
        yield runtime


@pytest.fixture
async def store(redis_server, key_prefix):
    client = aioredis.from_url(redis_server.url)
    store = Store(client, prefix=key_prefix, user_secret=TEST_SECRET, unrated_ttl_days=30,
                  home_tenant=TENANT)
    await store.ping()
    yield store
    await store.close()


@pytest.fixture
def own(store):
    """What the test server (TENANT) owns in the store."""
    return store.tenant(TENANT)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from trainer.demo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def pretrained_model_dir():
    """The demo's tiny GPT-2, pretrained as `make demo` does in its quick mode: built at most
    once per test run, and kept in PRETRAINED_CACHE under its recipe's digest, so a run
    rebuilds it only when its text, shape or pretraining changes. It is built aside and moved
    in whole: a run killed mid-build leaves nothing half-made under the digest."""
    from trainer.demo.prepare import (
        MODEL_DIR,
        PRETRAIN_STEPS,
        demo_recipe,
        recipe_digest,
        tiny_demo_model,
    )
    from trainer.demo.pretrain import pretrain_text

    steps = PRETRAIN_STEPS["quick"]
    home = PRETRAINED_CACHE / recipe_digest(demo_recipe(pretrain_text(), steps))
    if not (home / MODEL_DIR).is_dir():
        staging = home.with_name(f"{home.name}.building-{os.getpid()}")
        tiny_demo_model(staging, print, steps=steps)
        try:
            staging.rename(home)
        except OSError:  # another test run moved the same model in first
            shutil.rmtree(staging)
    return home / MODEL_DIR


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    """The tiny GPT-2 in eval mode, one per test module (fits wrap it with peft)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()


@pytest.fixture(scope="session")
def blobs(tiny_model_dir, tmp_path_factory):
    """Adapter bytes: two for the tiny model, and two built for another (n_embd 32) model."""
    from adapters_util import make_adapter_bytes

    from trainer.demo.tiny_model import build_tiny_model

    lora = load_settings(_env_file=None)
    other_dir = build_tiny_model(tmp_path_factory.mktemp("other-tiny"), n_embd=32)
    return {
        "v1": make_adapter_bytes(tiny_model_dir, lora, seed=1),
        "v2": make_adapter_bytes(tiny_model_dir, lora, seed=2),
        "other": make_adapter_bytes(other_dir, lora, seed=3),
        # built for the other model but claiming to be for ours: only the shapes can tell
        "other_forged": make_adapter_bytes(other_dir, lora, seed=3,
                                           base_model=str(tiny_model_dir)),
    }
