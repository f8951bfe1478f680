"""Settings: read from the environment once, validated with clear errors."""

from __future__ import annotations

import pytest

from bot.config import DEV_USER_HASH_SECRET, SettingsError, load_settings


def test_defaults_and_environment(monkeypatch):
    monkeypatch.setenv("MODEL_NAME", "distilgpt2")
    monkeypatch.setenv("TRAIN_INTERVAL_MINUTES", "15")
    monkeypatch.setenv("LORA_TARGETS", "c_attn, c_proj")
    settings = load_settings(_env_file=None)
    assert settings.model_name == "distilgpt2"
    assert settings.train_interval_minutes == 15
    assert settings.lora_target_modules == ["c_attn", "c_proj"]
    assert settings.redis_url.startswith("redis://")
    assert settings.resolved_device() in ("cpu", "cuda")
    assert load_settings(_env_file=None, device="cpu").resolved_device() == "cpu"


def test_env_file_is_read(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("KEY_PREFIX=fromfile\nMIN_NEW_RATINGS=3\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert (settings.key_prefix, settings.min_new_ratings) == ("fromfile", 3)


@pytest.mark.parametrize("name, value, fragment", [
    ("REDIS_URL", "localhost:6379", "REDIS_URL"),
    ("DEVICE", "gpu", "DEVICE"),
    ("TRAIN_INTERVAL_MINUTES", "soon", "TRAIN_INTERVAL_MINUTES"),
    ("MIN_NEW_RATINGS", "-1", "MIN_NEW_RATINGS"),
    ("KEY_PREFIX", "has space", "KEY_PREFIX"),
])
def test_bad_values_name_the_variable(monkeypatch, name, value, fragment):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=fragment):
        load_settings(_env_file=None)


def test_discord_needs_a_token_and_a_real_secret(monkeypatch):
    settings = load_settings(_env_file=None, discord_token="")
    with pytest.raises(SettingsError, match="DISCORD_TOKEN"):
        settings.require_discord()
    settings = load_settings(_env_file=None, discord_token="abc")
    assert settings.user_hash_secret.get_secret_value() == DEV_USER_HASH_SECRET
    with pytest.raises(SettingsError, match="USER_HASH_SECRET"):
        settings.require_discord()
    settings = load_settings(_env_file=None, discord_token="abc", user_hash_secret="x" * 32)
    settings.require_discord()
    assert "abc" not in repr(settings)  # secrets stay out of logs


def test_redis_address_hides_the_password():
    settings = load_settings(_env_file=None, redis_url="redis://:s3cret@redis:6379/0")
    assert settings.redis_address == "redis://redis:6379/0"
    assert load_settings(_env_file=None).redis_address == "redis://127.0.0.1:6379/0"
