"""redis+sentinel:// URLs: what they name, how a bad one is refused, and that their secrets are
hidden like those of a plain Redis URL."""

from __future__ import annotations

import pytest

from bot.core.config import SettingsError, load_settings
from bot.core.redact import redact, secrets_of
from bot.core.redis_url import SENTINEL_PORT, parse_sentinel_url
from bot.core.store.client import Acknowledgement, connect


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_master_connection():
    target = parse_sentinel_url("redis+sentinel://user:p%40ss@s1:26380,s2,[::1]:5/main/3"
                                "?socket_timeout=2&sentinel_password=sent")
    assert target.sentinels == [("s1", 26380), ("s2", SENTINEL_PORT), ("::1", 5)]
    assert target.service == "main"
    assert target.connection == {"username": "user", "password": "p@ss", "db": 3,
                                 "socket_timeout": 2.0}
    assert target.sentinel_password == "sent"


def test_without_a_database_or_credentials_the_defaults_apply():
    target = parse_sentinel_url("redis+sentinel://10.0.0.5/lbot")
    assert target.sentinels == [("10.0.0.5", SENTINEL_PORT)]
    assert target.connection == {"db": 0}
    assert target.sentinel_password is None


@pytest.mark.parametrize("url, says", [
    ("redis+sentinel://:hunter22@s1:26379", "REDIS_URL: names no service"),
    ("redis+sentinel://:hunter22@s1:26379/", "REDIS_URL: names no service"),
    ("redis+sentinel://:hunter22@s1:port/main", "REDIS_URL: names a sentinel whose port"),
    ("redis+sentinel://:hunter22@s1,,s2/main", "REDIS_URL: names a sentinel without a host"),
    ("redis+sentinel://:hunter22@s1/main/zero", "REDIS_URL: has a database number"),
    ("redis+sentinel://:hunter22@s1/main?socket_timeout=soon", "REDIS_URL: is not a Redis"),
    ("sentinel://:hunter22@s1/main", "REDIS_URL: must start with"),
])
def test_a_bad_sentinel_url_is_refused_without_its_password(url, says):
    with pytest.raises(SettingsError) as refused:
        load_settings(redis_url=url, _env_file=None)
    assert str(refused.value).startswith(f"invalid setting {says}")
    assert "hunter22" not in str(refused.value)


def test_the_passwords_of_a_sentinel_url_are_hidden():
    url = "redis+sentinel://:m4ster-pw@s1:26379,s2:26379/main/0?sentinel_password=s3ntinel"
    settings = load_settings(redis_url=url, _env_file=None)
    assert settings.redis_address == "redis+sentinel://s1:26379,s2:26379/main/0" \
                                     "?sentinel_password=***"
    line = redact(f"cannot reach {url} (password m4ster-pw, sentinel s3ntinel)",
                  secrets_of(settings))
    assert "m4ster-pw" not in line and "s3ntinel" not in line


def test_the_wait_for_replicas_is_bounded_and_off_by_default():
    with pytest.raises(SettingsError, match="REDIS_WAIT_TIMEOUT_MS"):
        load_settings(redis_wait_timeout_ms=0, _env_file=None)  # WAIT 0 would wait forever
    assert load_settings(_env_file=None).redis_wait_replicas == 0


async def test_the_socket_timeout_outlasts_the_wait():
    ack = Acknowledgement(replicas=1, timeout_ms=20_000, fence_key="t:fence")
    for url in ("redis://127.0.0.1:1/0", "redis+sentinel://127.0.0.1:1/main"):
        waiting = connect(url, max_connections=2, pool_timeout_s=1, acknowledgement=ack)
        plain = connect(url, max_connections=2, pool_timeout_s=1)
        assert waiting.connection_pool.connection_kwargs["socket_timeout"] == 25.0
        assert plain.connection_pool.connection_kwargs.get("socket_timeout") is None
        await waiting.aclose()
        await plain.aclose()
