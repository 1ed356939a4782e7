"""The domain error tree. `web/errors.py` maps each class to a status and a code."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AuthError",
    "Conflict",
    "CsrfRejected",
    "DependencyUnavailable",
    "Forbidden",
    "InvalidCredentials",
    "InvalidInput",
    "KeystileError",
    "LimitStatus",
    "NotAuthenticated",
    "NotFound",
    "Overloaded",
    "PasswordPolicyViolation",
    "RateLimited",
]


class KeystileError(Exception):
    """Base of every error a service raises on purpose."""

    code = "error"
    message = "The request could not be completed."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message


class InvalidInput(KeystileError):
    """The input is well-formed but not acceptable."""

    code = "invalid_input"
    message = "The input is not valid."


class PasswordPolicyViolation(InvalidInput):
    """A new password breaks the password policy (S1, S2)."""

    code = "weak_password"
    message = "The password does not meet the password policy."


class AuthError(KeystileError):
    """Authentication failed or is missing."""

    code = "not_authenticated"
    message = "Authentication is required."


class InvalidCredentials(AuthError):
    """Unknown user, wrong password or disabled account: deliberately indistinguishable (S6)."""

    code = "invalid_credentials"
    message = "The email or password is incorrect."


class NotAuthenticated(AuthError):
    """No valid session or token came with the request."""


class Forbidden(KeystileError):
    """The caller is known but may not do this."""

    code = "forbidden"
    message = "This is not allowed."


class CsrfRejected(Forbidden):
    """A cookie-authenticated state change came from another site (S11)."""

    code = "csrf_failed"
    message = "Cross-site request refused."


class NotFound(KeystileError):
    code = "not_found"
    message = "Nothing is here."


class Conflict(KeystileError):
    code = "conflict"
    message = "The request conflicts with the current state."


class Overloaded(KeystileError):
    """Admission control refused the work; the caller should retry later (S5)."""

    code = "overloaded"
    message = "The service is busy; retry shortly."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """The tightest rate limit that applied to a request, for the RateLimit-* headers."""

    limit: int  # requests allowed in a burst
    remaining: int  # requests left right now
    reset_after: int  # seconds until the whole burst is available again
    period: int  # seconds the limit is measured over


class RateLimited(KeystileError):
    """Too many requests or failed logins; retry after `retry_after` seconds (S27, S28).

    Every limit and every backoff answers with this same error, whether or not the
    account exists, so a refusal tells nothing about accounts (S6).
    """

    code = "rate_limited"
    message = "Too many attempts; retry later."

    def __init__(
        self, retry_after: int, message: str | None = None, *, status: LimitStatus | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        self.status = status


class DependencyUnavailable(KeystileError):
    """PostgreSQL or Redis did not answer within its deadline (S29)."""

    code = "unavailable"
    message = "A backing service is unavailable; retry shortly."

    def __init__(self, dependency: str, retry_after: int = 1) -> None:
        super().__init__()
        self.dependency = dependency
        self.retry_after = retry_after
