"""Settings: read from the environment once, validated with clear errors."""

from __future__ import annotations

import pytest

from bot.core.config import DEV_USER_HASH_SECRET, SettingsError, load_settings, redis_address


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
    ("LOG_FORMAT", "xml", "LOG_FORMAT"),
    ("METRICS_PORT", "0", "METRICS_PORT"),
    ("METRICS_PORT", "70000", "METRICS_PORT"),
])
def test_bad_values_name_the_variable(monkeypatch, name, value, fragment):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=fragment):
        load_settings(_env_file=None)


STRONG = "3f9c1a7e5b2d8046c1e9a7b3d5f20817"
TOKEN = "MTAxMjM0NTY3ODkwMTIzNDU2Nw.GaBcDe.a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9"  # its format


def test_discord_needs_a_token_and_a_real_secret(monkeypatch):
    monkeypatch.delenv("USER_HASH_SECRET", raising=False)
    settings = load_settings(_env_file=None, discord_token="")
    with pytest.raises(SettingsError, match="DISCORD_TOKEN"):
        settings.require_discord()
    settings = load_settings(_env_file=None, discord_token=TOKEN)
    assert settings.user_hash_secret.get_secret_value() == DEV_USER_HASH_SECRET
    assert settings.uses_dev_secret
    with pytest.raises(SettingsError, match="USER_HASH_SECRET is not set"):
        settings.require_discord()
    settings = load_settings(_env_file=None, discord_token=TOKEN, user_hash_secret=STRONG)
    settings.require_discord()
    assert TOKEN not in repr(settings)  # secrets stay out of logs


@pytest.mark.parametrize("token", ["abc", f"Bot {TOKEN}", TOKEN.replace(".", ""),
                                   TOKEN + ".extra", TOKEN[:-1] + "!"])
def test_discord_refuses_a_malformed_token_without_quoting_it(token):
    settings = load_settings(_env_file=None, discord_token=token, user_hash_secret=STRONG)
    with pytest.raises(SettingsError, match="DISCORD_TOKEN is not a Discord bot token") as error:
        settings.require_discord()
    assert token not in str(error.value) and TOKEN not in str(error.value)


@pytest.mark.parametrize("weak", ["x", " " * 40, "short-secret", "x" * 32, "abababababababab",
                                  "  padded  12345  "])
def test_discord_refuses_a_weak_secret_naming_the_variable(weak):
    settings = load_settings(_env_file=None, discord_token=TOKEN, user_hash_secret=weak)
    with pytest.raises(SettingsError, match="USER_HASH_SECRET is too weak"):
        settings.require_discord()


def test_redis_address_hides_the_password():
    settings = load_settings(_env_file=None, redis_url="redis://:s3cret@redis:6379/0")
    assert settings.redis_address == "redis://redis:6379/0"
    assert load_settings(_env_file=None).redis_address == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("url, shown", [
    ("redis://user:s3cret-pw@redis:6379/0", "redis://redis:6379/0"),
    ("redis://redis:6379/0?password=s3cret-pw", "redis://redis:6379/0?password=***"),
    ("redis://redis:6379/0?username=bob&password=s3cret-pw&db=2&socket_timeout=5",
     "redis://redis:6379/0?username=***&password=***&db=2&socket_timeout=5"),
    ("rediss://redis:6380/0?ssl_password=s3cret-pw", "rediss://redis:6380/0?ssl_password=***"),
    ("unix://:s3cret-pw@/run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
    ("unix:///run/redis.sock?db=1&password=s3cret-pw", "unix:///run/redis.sock?db=1&password=***"),
    ("redis://:s3cret%40pw@redis:6379/0", "redis://redis:6379/0"),
    # A password with "/" or "?" runs past the host: nothing of it may show.
    ("redis://:s3cret/pw@redis:6379/0", "redis://***"),
    ("redis://:s3cret?pw@redis:6379/0", "redis://***"),
])
def test_redis_address_hides_every_credential_form(url, shown):
    assert redis_address(url) == shown  # (the last two are refused as settings, see below)


def test_a_bad_redis_url_is_refused_without_quoting_it():
    # urllib would say "Port could not be cast to integer value as 's3cret-pw'".
    with pytest.raises(SettingsError, match="REDIS_URL") as caught:
        load_settings(_env_file=None, redis_url="redis://:s3cret-pw")
    assert "s3cret" not in str(caught.value)
    with pytest.raises(SettingsError, match="REDIS_URL"):
        load_settings(_env_file=None, redis_url="redis://redis:6379/0?db=zero")


@pytest.mark.parametrize("values, says", [
    ({"shard_ids": "0,1"}, "SHARD_IDS needs SHARD_COUNT"),
    ({"shard_ids": "0,4", "shard_count": 4}, "SHARD_IDS names shard 4, but SHARD_COUNT is 4"),
    ({"shard_ids": "1,1", "shard_count": 4}, "SHARD_IDS: names a shard twice"),
    ({"shard_ids": "0-3", "shard_count": 4}, "SHARD_IDS: must be a comma-separated list"),
])
def test_shard_ids_are_checked_against_the_shard_count(values, says):
    with pytest.raises(SettingsError, match=says):
        load_settings(_env_file=None, **values)


def test_shard_ids_name_this_process_shards():
    assert load_settings(_env_file=None, shard_ids=" 3, 1", shard_count=4).shard_id_list == [3, 1]
    assert load_settings(_env_file=None, shard_count=4).shard_id_list is None
