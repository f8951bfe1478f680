"""Every setting of the bot and the trainer, read once from the environment (and `.env`).

`load_settings()` validates them all and turns a bad value into one clear message naming the
variable; nothing else in the project reads `os.environ` for configuration.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The placeholder a dev setup may run with; `python -m bot run` refuses it (see require_discord),
# the console and the demo say so when they use it.
DEV_USER_HASH_SECRET = "dev-only-not-secret"
MIN_SECRET_CHARS = 16
MIN_SECRET_DISTINCT = 6
# Query arguments of a Redis URL that redis-py parses as numbers or flags: shown in messages.
# Any other argument (password=, username=, ssl_password=, ...) is shown as "***".
PLAIN_URL_ARGUMENTS = {
    "db", "socket_timeout", "socket_connect_timeout", "socket_read_size", "socket_keepalive",
    "retry_on_timeout", "max_connections", "health_check_interval", "ssl_check_hostname",
    "ssl_min_version", "timeout", "protocol", "legacy_responses", "ssl_cert_reqs"}


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable and what is wrong."""


def _number_list(value: str, what: str) -> list[str]:
    """The comma-separated numbers in `value` (blanks skipped), or a ValueError naming `what`."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not all(n.isdigit() for n in names):
        raise ValueError(f"must be a comma-separated list of {what}")
    return names


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- connections -----------------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_max_connections: int = Field(32, ge=2, le=10_000)
    redis_pool_timeout_seconds: float = Field(10.0, gt=0.0)
    # Writes count once this many replicas confirm them (WAIT; bot/core/store/client.py)
    redis_wait_replicas: int = Field(0, ge=0, le=16)
    redis_wait_timeout_ms: int = Field(1000, ge=1, le=60_000)
    key_prefix: str = Field("lbot", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    discord_token: SecretStr | None = None
    shard_count: int | None = Field(None, ge=1)
    shard_ids: str = ""  # this process's shards, e.g. "0,1" (empty: all SHARD_COUNT of them)

    # --- model and generation --------------------------------------------------------------
    model_name: str = "gpt2"
    device: str = "auto"
    model_dtype: Literal["auto", "float32", "bfloat16", "float16", "int8"] = "auto"
    max_new_tokens: int = Field(64, ge=1, le=512)
    temperature: float = Field(0.8, ge=0.0, le=5.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.2, ge=1.0, le=5.0)
    batch_max_size: int = Field(16, ge=1, le=256)
    batch_max_wait_ms: int = Field(20, ge=0, le=5000)
    queue_max: int = Field(64, ge=1)
    max_loaded_adapters: int = Field(8, ge=1, le=256)

    # --- servers (tenants) -----------------------------------------------------------------
    home_guild_id: int | None = None
    allowed_guild_ids: str = ""

    # --- Discord behaviour -----------------------------------------------------------------
    moderator_role: str = "Moderator"
    admin_role: str | None = None
    modlog_channel_id: int | None = None
    dm_enabled: bool = True
    context_messages: int = Field(8, ge=0, le=50)
    cooldown_seconds: float = Field(3.0, ge=0.0)
    style_max_chars: int = Field(200, ge=1, le=1000)
    max_message_chars: int = Field(4000, ge=100, le=1_000_000)

    # --- privacy ---------------------------------------------------------------------------
    user_hash_secret: SecretStr = SecretStr(DEV_USER_HASH_SECRET)
    unrated_ttl_days: int = Field(30, ge=1)

    # --- training --------------------------------------------------------------------------
    train_interval_minutes: int = Field(60, ge=1)
    min_new_ratings: int = Field(20, ge=0)
    max_train_examples: int = Field(2000, ge=1)
    lora_rank: int = Field(8, ge=1, le=256)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_targets: str = "c_attn,c_proj"
    search_trials: int = Field(6, ge=1)
    search_timeout_seconds: int = Field(900, ge=1)
    max_epochs: int = Field(4, ge=1)
    max_train_tokens: int = Field(256, ge=16)
    gate_margin: float = Field(0.01, ge=0.0)
    train_lock_ttl_seconds: int = Field(120, ge=5)
    reports_dir: Path = Path("reports")
    micro_batch_size: int = Field(8, ge=1, le=256)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    early_stop_patience: int = Field(1, ge=1)
    search_lr_min: float = Field(1e-5, gt=0.0)
    search_lr_max: float = Field(1e-2, gt=0.0)
    search_seed: int | None = Field(None, ge=0)  # None: a new seed each cycle
    # preference learning (issue 11)
    dpo_weight: float = Field(0.5, ge=0.0)
    kto_weight: float = Field(0.5, ge=0.0)
    preference_beta: float = Field(1.0, gt=0.0)
    kto_desirable_weight: float = Field(0.0, ge=0.0)
    preference_epochs: int = Field(1, ge=0)
    preference_lr_factor: float = Field(0.25, gt=0.0, le=1.0)

    # --- the gate (trainer/gate.py, trainer/quality.py) ---------------------------------------
    gate_max_prompts: int = Field(48, ge=0, le=10_000)
    gate_bootstrap_samples: int = Field(1000, ge=100, le=100_000)
    gate_chrf_margin: float = Field(0.0, ge=0.0, le=100.0)
    gate_forget_nats: float = Field(0.5, ge=0.0)

    # --- moderator trust (trainer/trust.py) -----------------------------------------------------
    trust_max_share: float = Field(0.5, gt=0.0, le=1.0)
    trust_min_signals: int = Field(20, ge=1)
    trust_repeat_prompts: int = Field(3, ge=2)

    # --- the canary: live ratings judge a promoted adapter (bot/core/canary_rule.py) ----------
    canary_share: float = Field(0.0, ge=0.0, lt=1.0)  # 0: a promotion serves at once
    canary_min_ratings: int = Field(20, ge=1)
    canary_margin: float = Field(0.02, ge=0.0, le=0.5)
    canary_confidence: float = Field(0.95, gt=0.5, lt=1.0)
    canary_max_hours: float = Field(336.0, gt=0.0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line (bot/core/logs.py)
    # Prometheus metrics over HTTP on this port, every interface (unset: none; bot/core/metrics.py)
    metrics_port: int | None = Field(None, ge=1, le=65535)

    # --- CPU serving (bot/engine/serving_model.py) ------------------------------------------------
    torch_threads: int | None = Field(None, ge=1, le=1024)  # None: torch's default

    # --- inference workers on Ray Serve (bot/fleet/) ------------------------------------------
    generator: Literal["local", "ray"] = "local"  # ray: replies come from `bot worker`s
    ray_address: str | None = None  # None: `bot worker` starts a local Ray instance
    ray_app: str = Field("lbot-inference", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    worker_replicas: int = Field(1, ge=1, le=1024)
    worker_num_cpus: float = Field(1.0, ge=0.0)
    worker_num_gpus: float = Field(0.0, ge=0.0)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        from bot.core.redis_url import is_sentinel_url, parse_sentinel_url

        if is_sentinel_url(value):
            parse_sentinel_url(value)  # its messages quote no part of the URL
            return value
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
        from redis.connection import parse_url  # what the client will read from it

        try:
            parse_url(value)
        except ValueError:
            # redis-py's own message may quote a part of the URL, which can be the password.
            raise ValueError("is not a Redis URL redis-py can read (check the port, the "
                             "database number and the query arguments)") from None
        return value

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "cpu", "cuda", "mps") or value.startswith("cuda:"):
            return value
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")

    @field_validator("lora_targets")
    @classmethod
    def _targets(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        if not names:
            raise ValueError("must name at least one module, e.g. c_attn")
        return ",".join(names)

    @field_validator("discord_token", "admin_role", "ray_address", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        return None if value == "" else value

    @field_validator("user_hash_secret", mode="before")
    @classmethod
    def _empty_secret_is_placeholder(cls, value):
        # A blank line copied from .env.example must not become an empty HMAC key:
        # mapping it to the placeholder makes require_discord refuse it.
        return DEV_USER_HASH_SECRET if value == "" else value

    @field_validator("shard_ids")
    @classmethod
    def _shard_ids(cls, value: str) -> str:
        names = _number_list(value, "shard numbers, e.g. 0,1")
        if len(set(map(int, names))) != len(names):
            raise ValueError("names a shard twice")
        return ",".join(str(int(n)) for n in names)

    @field_validator("allowed_guild_ids")
    @classmethod
    def _guild_ids(cls, value: str) -> str:
        return ",".join(_number_list(value, "server (guild) ids"))

    @field_validator("modlog_channel_id", "shard_count", "home_guild_id", "search_seed",
                     "metrics_port", "torch_threads", mode="before")
    @classmethod
    def _empty_number_is_unset(cls, value):
        return None if value == "" else value

    @model_validator(mode="after")
    def _reply_fits(self) -> Settings:
        if self.batch_max_size > self.queue_max:
            raise ValueError("BATCH_MAX_SIZE must not exceed QUEUE_MAX")
        if self.generator == "ray" and self.ray_address is None:
            raise ValueError("GENERATOR=ray needs RAY_ADDRESS: auto, on a node of the Ray "
                             "cluster where `bot worker` serves (ray:// cannot stream replies)")
        return self

    @model_validator(mode="after")
    def _shards_fit(self) -> Settings:
        ids = self.shard_id_list
        if ids is None:
            return self
        if self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT (the total over every process)")
        too_big = [i for i in ids if i >= self.shard_count]
        if too_big:
            raise ValueError(f"SHARD_IDS names shard {too_big[0]}, but SHARD_COUNT is "
                             f"{self.shard_count} (shards are 0 to {self.shard_count - 1})")
        return self

    @property
    def redis_address(self) -> str:
        """REDIS_URL without its credentials, for messages and logs: no user or password
        before the host, and every query argument that may hold one shown as ***."""
        return redis_address(self.redis_url)

    @property
    def uses_dev_secret(self) -> bool:
        """USER_HASH_SECRET is unset: the development placeholder hashes user ids."""
        return self.user_hash_secret.get_secret_value() == DEV_USER_HASH_SECRET

    @property
    def shard_id_list(self) -> list[int] | None:
        """SHARD_IDS as numbers (None: this process runs every shard, or is not sharded)."""
        return [int(n) for n in self.shard_ids.split(",")] if self.shard_ids else None

    @property
    def allowed_guilds(self) -> set[int]:
        """ALLOWED_GUILD_IDS as ids (empty: every server may use the bot)."""
        return {int(n) for n in self.allowed_guild_ids.split(",") if n}

    @property
    def lora_target_modules(self) -> list[str]:
        return self.lora_targets.split(",")

    def resolved_device(self) -> str:
        """`auto` becomes cuda when a GPU is visible, else cpu."""
        if self.device != "auto":
            return self.device
        import torch  # imported here so reading settings stays cheap

        return "cuda" if torch.cuda.is_available() else "cpu"

    def require_discord(self) -> None:
        """What connecting to Discord needs beyond the defaults; raises SettingsError."""
        if self.discord_token is None:
            raise SettingsError("DISCORD_TOKEN is not set: create a bot in the Discord developer "
                                "portal and put its token in the environment or .env")
        check_token_format(self.discord_token.get_secret_value())
        if self.uses_dev_secret:
            raise SettingsError("USER_HASH_SECRET is not set: set a long random value (e.g. "
                                "`openssl rand -hex 32`) before serving users")
        weakness = secret_weakness(self.user_hash_secret.get_secret_value())
        if weakness:
            raise SettingsError(f"USER_HASH_SECRET is too weak ({weakness}): set a long random "
                                "value (e.g. `openssl rand -hex 32`) before serving users")


# A bot token is three base64url parts joined by dots (the bot's id, a timestamp, an HMAC).
_TOKEN_FORMAT = re.compile(r"[A-Za-z0-9_-]{17,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}")


def check_token_format(token: str) -> None:
    """Raise SettingsError (never quoting the token) when DISCORD_TOKEN cannot be a bot token,
    before anything slow starts."""
    if _TOKEN_FORMAT.fullmatch(token.strip()):
        return
    hint = (" (leave out the \"Bot \" prefix)" if token.startswith("Bot ") else
            ": copy the bot token again from the developer portal (Bot -> Reset Token)")
    raise SettingsError(f"DISCORD_TOKEN is not a Discord bot token (three dot-separated parts "
                        f"of letters, digits, - and _){hint}")


def secret_weakness(secret: str) -> str | None:
    """Why `secret` is too weak to key the user-id HMAC, or None when it will do."""
    stripped = secret.strip()
    if len(stripped) < MIN_SECRET_CHARS:
        return f"{len(stripped)} characters besides spaces, fewer than {MIN_SECRET_CHARS}"
    if len(set(stripped)) < MIN_SECRET_DISTINCT:
        return f"only {len(set(stripped))} different characters"
    return None


def redis_address(url: str) -> str:
    """A Redis URL as messages may show it: see Settings.redis_address."""
    scheme, _, rest = url.partition("://")
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{scheme}://***"
    tail = rest[len(parts.netloc):]
    if "@" in tail or parts.fragment:
        # A password holding "/", "?" or "#" runs past where the host seems to start: show
        # nothing rather than guess which part is the password.
        return f"{scheme}://***"
    host = parts.netloc.rpartition("@")[2]
    shown = "&".join(f"{name}={value if name in PLAIN_URL_ARGUMENTS else '***'}"
                     for name, value in parse_qsl(parts.query, keep_blank_values=True))
    return f"{scheme}://{host}{parts.path}" + (f"?{shown}" if shown else "")


def _describe(error: ValidationError) -> str:
    """One line per bad setting (never its value: it may be a secret)."""
    lines = []
    for item in error.errors():
        name = "_".join(str(part) for part in item["loc"]).upper() or "settings"
        lines.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
    if len(lines) == 1:
        return f"invalid setting {lines[0]}"
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(**overrides) -> Settings:
    """Read and validate the settings; a bad value raises SettingsError with a clear message."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
