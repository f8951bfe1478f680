"""Health check for the bot and trainer containers (and systemd hosts).

Healthy means: the settings in the environment are valid and the store answers with the
schema this code speaks (`Store.ping`). With `--discord` (the bot's check) also: the bot
process on this host (with these SHARD_IDS, when set) wrote a heartbeat lately
(bot/frontends/discord/cogs/health.py) and its gateway connection is up, each of its shards
ready. Exits 0 when healthy, 1 otherwise, with one line
that says why; it never prints a setting's value, so no password or token reaches the logs.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time

from redis.exceptions import RedisError

from bot.core.config import SettingsError, load_settings
from bot.core.redact import redact, secrets_of
from bot.core.store import Store, StoreError
from bot.core.store.keys import gateway_process

TIMEOUT_S = 5.0
HEARTBEAT_STALE_S = 90.0  # three missed beats (the bot writes one every 30 s)


async def _check(settings, discord: bool) -> dict | None:
    """Ping the store; with `discord`, also read this host's bot heartbeat."""
    store = Store.from_settings(settings)
    try:
        await asyncio.wait_for(store.ping(), TIMEOUT_S)
        if discord:
            process = gateway_process(socket.gethostname(), settings.shard_id_list)
            return await asyncio.wait_for(store.heartbeat(process), TIMEOUT_S)
        return None
    finally:
        await store.close()


def discord_problem(beat: dict | None, now: float) -> str | None:
    """Why the bot's Discord connection is not healthy, from its heartbeat (None: healthy)."""
    if beat is None:
        return ("no heartbeat from the bot on this host (not started, not connected yet, or "
                "it cannot write to Redis)")
    age = now - float(beat.get("at", 0))
    if age > HEARTBEAT_STALE_S:
        return f"the bot's last heartbeat is {age:.0f} s old"
    ready = beat.get("shards_ready", 0)
    count = beat.get("shards_expected", beat.get("shard_count", 1))
    if not beat.get("ready") or ready < count:
        return f"not connected to the gateway ({ready}/{count} shards ready)"
    if beat.get("latency_ms") is None:
        return "no gateway latency measured yet"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--discord", action="store_true",
                        help="also check the bot's Discord connection (for the bot's host)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"unhealthy: {error}")
        return 1
    try:
        beat = asyncio.run(_check(settings, args.discord))
    except TimeoutError:
        print(f"unhealthy: Redis did not answer within {TIMEOUT_S:.0f} s")
        return 1
    except (RedisError, StoreError, OSError) as error:
        # Whatever the message quotes, the credentials in REDIS_URL are hidden.
        print(redact(f"unhealthy: Redis: {type(error).__name__}: {error}",
                     secrets_of(settings)))
        return 1
    if not args.discord:
        print("healthy: settings valid, store answers")
        return 0
    problem = discord_problem(beat, time.time())
    if problem:
        print(f"unhealthy: Discord: {problem}")
        return 1
    expected = beat.get("shards_expected", beat["shard_count"])
    print(f"healthy: settings valid, store answers, Discord connected (gateway latency "
          f"{beat['latency_ms']:.0f} ms, {beat['shards_ready']}/{expected} shards ready, "
          f"heartbeat {time.time() - beat['at']:.0f} s ago)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
