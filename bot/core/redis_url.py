"""Reading REDIS_URL: redis-py's own forms, or a store behind Redis Sentinel.

REDIS_URL takes redis-py's own forms (redis://, rediss://, unix://) or, for a store behind
Redis Sentinel:

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db][?args]

The hosts are the sentinels (port 26379 when left out); `service_name` is the master's name in
their `sentinel monitor` line. The password (and user) are the master's and its replicas'; a
`sentinel_password=` argument is the sentinels' own (`requirepass` in sentinel.conf). Other
query arguments are redis-py's (socket_timeout=, ...), for the master and the sentinels alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.connection import parse_url

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
SENTINEL_PASSWORD_ARGUMENT = "sentinel_password"


@dataclass(frozen=True)
class SentinelTarget:
    """What a redis+sentinel:// URL names."""

    sentinels: list[tuple[str, int]]
    service: str
    connection: dict = field(default_factory=dict)  # db, password, timeouts ... for the master
    sentinel_password: str | None = None



def is_sentinel_url(url: str) -> bool:
    return url.startswith(f"{SENTINEL_SCHEME}://")


def _sentinel_hosts(hosts: str) -> list[tuple[str, int]]:
    found = []
    for entry in hosts.split(","):
        entry = entry.strip()
        if entry.startswith("["):  # [IPv6]:port
            host, _, port = entry[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
        if not host:
            raise ValueError("names a sentinel without a host (hosts are host[:port], "
                             "separated by commas)")
        if port and not port.isdigit():
            raise ValueError("names a sentinel whose port is not a number")
        found.append((host, int(port) if port else SENTINEL_PORT))
    return found


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, the service and the master's connection arguments of a
    redis+sentinel:// URL; ValueError (never quoting a credential) when it is malformed."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ValueError("names no sentinel (redis+sentinel://host:port[,host:port]/service)")
    sentinels = _sentinel_hosts(hosts)
    service, _, db = parts.path.strip("/").partition("/")
    if not service:
        raise ValueError("names no service (the master's name in `sentinel monitor`) after "
                         "the sentinels")
    if db and not db.isdigit():
        raise ValueError("has a database number that is not a number (…/service_name/db)")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    sentinel_password = next((v for k, v in pairs if k == SENTINEL_PASSWORD_ARGUMENT), None)
    rest = "&".join(pair for pair in parts.query.split("&")
                    if pair and unquote(pair.partition("=")[0]) != SENTINEL_PASSWORD_ARGUMENT)
    # The rest reads as a plain URL does: redis-py casts the arguments and unquotes the password.
    plain = f"redis://{userinfo + '@' if userinfo else ''}sentinel/{db or 0}"
    try:
        connection = parse_url(plain + (f"?{rest}" if rest else ""))
    except ValueError:
        # redis-py's own message may quote a part of the URL, which can be the password.
        raise ValueError("is not a Redis URL redis-py can read (check the query "
                         "arguments)") from None
    for name in ("host", "port"):
        connection.pop(name, None)
    return SentinelTarget(sentinels, unquote(service), connection, sentinel_password or None)
