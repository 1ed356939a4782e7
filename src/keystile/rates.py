"""Rates and the rate-limited actions: plain values shared by settings, services and stores."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = ["RATE_PATTERN", "Action", "Rate", "RateLimits", "parse_rate"]

RATE_PATTERN = re.compile(
    r"(\d+)\s*/\s*(\d+)?\s*(s|secs?|seconds?|m|mins?|minutes?|h|hours?|d|days?)"
)
_UNIT_SECONDS = {
    "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
    "h": 3600, "hour": 3600, "d": 86400, "day": 86400,
}  # fmt: skip


class Action(StrEnum):
    """Every action the rate limiter knows; each has a per-address and a per-account limit."""

    LOGIN = "login"
    TOKEN = "token"  # noqa: S105 - an action name
    REFRESH = "refresh"
    REGISTER = "register"
    PASSWORD_CHANGE = "password_change"  # noqa: S105 - an action name
    PASSWORD_RESET = "password_reset"  # noqa: S105 - an action name
    EMAIL_VERIFICATION = "email_verification"
    EMAIL_CHANGE = "email_change"


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` requests per `period` seconds, all of them allowed at once as a burst."""

    count: int
    period: float

    @property
    def interval_ms(self) -> float:
        return self.period * 1000 / self.count

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"

    @classmethod
    def parse(cls, text: str) -> Rate | None:
        """Read "30/minute", "5/10s", "1000/hour" ...; "off" means no limit (None)."""
        if text.strip().lower() == "off":
            return None
        match = RATE_PATTERN.fullmatch(text.strip().lower())
        if match is None:
            raise ValueError(f"not a rate: {text!r} (try '30/minute' or '5/10s')")
        count, multiple, unit = match.groups()
        period = int(multiple or 1) * _UNIT_SECONDS[unit.rstrip("s") or "s"]
        if int(count) < 1 or period <= 0:
            raise ValueError(f"not a rate: {text!r}")
        return cls(count=int(count), period=period)


def parse_rate(value: Any) -> Any:
    """Turn a rate written as text ("30/minute", "off") into a `Rate` or None."""
    return Rate.parse(value) if isinstance(value, str) else value


OptionalRate = Annotated[Rate | None, BeforeValidator(parse_rate)]


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The limits of one action; None means no limit in that scope."""

    per_ip: OptionalRate
    per_account: OptionalRate
