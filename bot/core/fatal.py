"""What an entry point says when it cannot go on: one clear line, a non-zero exit, no traceback
(that goes to the log at DEBUG) and no secret.

    return run_main(serve(settings), settings, "bot run")
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine

from redis.exceptions import AuthenticationError, OutOfMemoryError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.core.redact import redact, secrets_of
from bot.core.store.records import StoreError

log = logging.getLogger(__name__)


class Fatal(Exception):
    """A failure whose message is already written for the operator."""


def _refused_credentials(error: BaseException) -> bool:
    return isinstance(error, AuthenticationError) or (
        isinstance(error, ResponseError) and str(error).startswith(("NOAUTH", "WRONGPASS")))


def explain(error: BaseException, settings) -> str:
    """One line (or a few, for several bad settings) that says what went wrong."""
    address = settings.redis_address
    if isinstance(error, Fatal | StoreError):  # written for the operator already
        text = str(error)
    elif _refused_credentials(error):
        text = (f"Redis at {address} refused the credentials in REDIS_URL "
                f"({type(error).__name__}: {error})")
    elif isinstance(error, OutOfMemoryError):
        text = (f"Redis at {address} is full (its used memory reached maxmemory) and refused "
                "a write: raise maxmemory in redis.conf or free memory, then start again")
    elif isinstance(error, RedisConnectionError | RedisTimeoutError):
        text = f"cannot reach Redis at {address}: {error}"
    elif isinstance(error, RedisError):
        text = f"Redis at {address} answered with an error: {type(error).__name__}: {error}"
    else:
        text = f"{type(error).__name__}: {error}"
    return redact(text, secrets_of(settings))


def run_main(main: Coroutine, settings, what: str, *, interrupted: int = 130) -> int:
    """Run `main` to its exit status; any failure becomes `what failed: <explain>` on stderr
    and exit status 1. Ctrl-C exits with `interrupted`."""
    try:
        status = asyncio.run(main)
    except KeyboardInterrupt:
        return interrupted
    except Exception as error:
        log.debug("%s failed", what, exc_info=True)
        print(f"{what} failed: {explain(error, settings)}", file=sys.stderr)
        return 1
    return status or 0
