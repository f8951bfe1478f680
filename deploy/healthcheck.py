"""Health check for the bot and trainer containers (and systemd hosts).

Healthy means: the settings in the environment are valid and the store answers with the
schema this code speaks (`Store.ping`). Exits 0 when healthy, 1 otherwise, with one line that
says why; it never prints a setting's value, so no password or token reaches the logs.
"""

from __future__ import annotations

import asyncio
import sys

from redis.exceptions import RedisError

from bot.config import SettingsError, load_settings
from bot.redact import redact, secrets_of
from bot.store import Store, StoreError

TIMEOUT_S = 5.0


async def _ping(settings) -> None:
    store = Store.from_settings(settings)
    try:
        await asyncio.wait_for(store.ping(), TIMEOUT_S)
    finally:
        await store.close()


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"unhealthy: {error}")
        return 1
    try:
        asyncio.run(_ping(settings))
    except TimeoutError:
        print(f"unhealthy: Redis did not answer within {TIMEOUT_S:.0f} s")
        return 1
    except (RedisError, StoreError, OSError) as error:
        # Whatever the message quotes, the credentials in REDIS_URL are hidden.
        print(redact(f"unhealthy: Redis: {type(error).__name__}: {error}",
                     secrets_of(settings)))
        return 1
    print("healthy: settings valid, store answers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
