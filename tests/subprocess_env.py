"""The environment for a child process that must see exactly a test's settings.

Settings variables of this process (a developer's KEY_PREFIX, say) are dropped first, so only
what the test sets counts.
"""

from __future__ import annotations

import os

from bot.core.config import Settings

SETTING_NAMES = {name.upper() for name in Settings.model_fields}


def clean_env() -> dict[str, str]:
    """This process's environment without any setting."""
    return {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}


def settings_env(settings, **extra) -> dict[str, str]:
    """`clean_env()` plus the connection, model, privacy and search-seed settings of
    `settings`, plus `extra` (NAME=value, values turned into strings)."""
    env = clean_env()
    env.update(REDIS_URL=settings.redis_url, KEY_PREFIX=settings.key_prefix,
               MODEL_NAME=settings.model_name, DEVICE=settings.device,
               USER_HASH_SECRET=settings.user_hash_secret.get_secret_value(),
               REPORTS_DIR=str(settings.reports_dir))
    if settings.home_guild_id is not None:
        env["HOME_GUILD_ID"] = str(settings.home_guild_id)
    if settings.search_seed is not None:  # a child's training must not vary with the clock
        env["SEARCH_SEED"] = str(settings.search_seed)
    env.update({name: str(value) for name, value in extra.items()})
    return env
