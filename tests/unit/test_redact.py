"""Secrets never reach a message or a log line: every credential form of REDIS_URL, the token
and the hash secret are hidden by bot.core.redact, also in tracebacks."""

from __future__ import annotations

import io
import logging

import pytest

from bot.core.config import Settings, load_settings
from bot.core.redact import MASK, hide_secrets_in_logs, redact, secrets_of

PASSWORD = "s3cret-pw"


@pytest.mark.parametrize("url", [
    f"redis://:{PASSWORD}@redis:6379/0",
    f"redis://default:{PASSWORD}@redis:6379/0",
    f"redis://redis:6379/0?password={PASSWORD}",
    f"redis://redis:6379/0?db=1&username=bob&password={PASSWORD}",
    f"rediss://redis:6380/0?ssl_password={PASSWORD}",
    f"unix://:{PASSWORD}@/run/redis.sock?db=0",
    f"unix:///run/redis.sock?password={PASSWORD}",
    "redis://:s3cret%2Dpw@redis:6379/0",  # percent-encoded "-"
    f"redis://:{PASSWORD}/x@redis:6379/0",  # a "/" in the password
])
def test_every_credential_form_is_hidden(url):
    settings = Settings.model_construct(redis_url=url)  # the last one fails validation
    secrets = secrets_of(settings)
    for text in (f"cannot connect to {url}", f"AUTH failed for password {PASSWORD}",
                 f"{settings.redis_url!r}"):
        hidden = redact(text, secrets)
        assert PASSWORD not in hidden and MASK in hidden


def test_token_and_hash_secret_are_hidden_but_the_dev_value_is_not_a_secret():
    settings = load_settings(_env_file=None, discord_token="tok-abcdef123456",
                             user_hash_secret="hash-secret-0123456789")
    text = redact("token tok-abcdef123456 secret hash-secret-0123456789", secrets_of(settings))
    assert text == f"token {MASK} secret {MASK}"
    plain = load_settings(_env_file=None)
    assert plain.uses_dev_secret and secrets_of(plain) == []  # the address is no secret


def test_an_address_without_credentials_is_shown():
    settings = load_settings(_env_file=None, redis_url="redis://cache.internal:6380/2?db=2")
    line = f"cannot reach Redis at {settings.redis_address}"
    assert redact(line, secrets_of(settings)) == line


def test_log_lines_and_tracebacks_are_redacted():
    settings = load_settings(_env_file=None, redis_url=f"redis://h:6379/0?password={PASSWORD}")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        hide_secrets_in_logs(settings)
        log = logging.getLogger("test.redact")
        log.error("connecting to %s", settings.redis_url)
        try:
            raise ValueError(f"bad password {PASSWORD}")
        except ValueError:
            log.exception("failed")
    finally:
        root.removeHandler(handler)
    out = stream.getvalue()
    assert PASSWORD not in out
    assert out.startswith(f"ERROR connecting to {MASK}") and "Traceback" in out
