"""How an entry point logs: LOG_LEVEL, and LOG_FORMAT text (one readable line) or json (one
JSON object per line, for a log shipper); either way no secret reaches a line.

    configure_logging(settings)
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from bot.core.redact import hide_secrets_in_logs, redact, secrets_of

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One object per record: time (UTC, ISO 8601), level, logger, message and, when there is
    one, the traceback as `exc`. Secrets are hidden before encoding: JSON escapes would keep a
    secret holding a quote or a backslash from matching afterwards."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                 "level": record.levelname, "logger": record.name,
                 "message": redact(record.getMessage(), self.secrets)}
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info), self.secrets)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info), self.secrets)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings) -> None:
    """Log to stderr at LOG_LEVEL in LOG_FORMAT, hiding the secrets of
    `settings`."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(secrets_of(settings)))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    hide_secrets_in_logs(settings)
