"""No secret in any message or log line: the values to hide, and a log formatter that hides them.

The secrets are the Redis credentials in REDIS_URL (a password before the host, in any query
argument such as `?password=` or `?ssl_password=`, percent-encoded or not), DISCORD_TOKEN and
USER_HASH_SECRET. `redact(text, secrets)` replaces each with ***; `hide_secrets_in_logs` wraps
every handler's formatter of the root logger so messages and tracebacks pass through it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, unquote, urlsplit

from bot.core.config import DEV_USER_HASH_SECRET, PLAIN_URL_ARGUMENTS, redis_address

MASK = "***"
MIN_SECRET_CHARS = 4  # shorter values would blank common words; such a password is no secret


def url_secrets(url: str) -> set[str]:
    """Every credential redis-py would read from `url`, as written and percent-decoded (the
    whole URL too when it holds one; a URL without credentials is an address to show)."""
    found = set() if redis_address(url) == url else {url}
    scheme, _, rest = url.partition("://")
    userinfo = rest.rpartition("@")[0]  # everything before the last "@", however malformed
    if userinfo:
        # "user:password", or in a malformed URL a password holding "/", "?" or "#" (then
        # urllib reads a part of it as the port, which error messages may quote).
        found.add(userinfo)
        found.update(re.split(r"[:/?#]", userinfo))
    try:
        parts = urlsplit(url)
        if parts.password:
            found.add(parts.password)
        query = parts.query
    except ValueError:
        query = rest.partition("?")[2]
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if unquote(name) not in PLAIN_URL_ARGUMENTS:
            found.add(value)
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in PLAIN_URL_ARGUMENTS:
            found.add(value)
    return found | {unquote(value) for value in found}


def secrets_of(settings) -> list[str]:
    """The secret values in `settings`, longest first (so a longer one is hidden whole)."""
    found = url_secrets(settings.redis_url)
    if settings.discord_token is not None:
        found.add(settings.discord_token.get_secret_value())
    hash_secret = settings.user_hash_secret.get_secret_value()
    if hash_secret != DEV_USER_HASH_SECRET:
        found.add(hash_secret)
    found = {value for value in found if len(value.strip()) >= MIN_SECRET_CHARS}
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats with the wrapped formatter, then hides the secrets (tracebacks included)."""

    def __init__(self, inner: logging.Formatter | None, secrets: list[str]):
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record), self.secrets)


def hide_secrets_in_logs(settings) -> None:
    """Make every handler of the root logger hide the secrets of `settings`."""
    secrets = secrets_of(settings)
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, RedactingFormatter):
            handler.formatter.secrets = secrets
        else:
            handler.setFormatter(RedactingFormatter(handler.formatter, secrets))
