"""The domain error tree: each error's stable code, HTTP status and message (web/errors.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

__all__ = [
    "AuthError",
    "Conflict",
    "CsrfRejected",
    "DependencyUnavailable",
    "EmailNotVerified",
    "FactorRequired",
    "Forbidden",
    "InsufficientScope",
    "InvalidApiKey",
    "InvalidClient",
    "InvalidCredentials",
    "InvalidInput",
    "InvalidLinkToken",
    "InvalidMfaCode",
    "InvalidMfaToken",
    "InvalidPasskey",
    "InvalidRefreshToken",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "InvalidToken",
    "InvalidWebAuthn",
    "KeystileError",
    "LastAdmin",
    "LimitStatus",
    "MalformedForm",
    "MfaRequired",
    "NotAuthenticated",
    "NotFound",
    "Overloaded",
    "PasswordPolicyViolation",
    "PasswordTooLong",
    "RateLimited",
    "ReauthenticationRequired",
    "ReauthenticationUnsupported",
    "RoleRequired",
    "TokenExpired",
    "TokenRevoked",
    "UnsupportedGrantType",
    "UserRequired",
]


class KeystileError(Exception):
    """Base of every error a service raises on purpose.

    A subclass names its stable `code`, its `http_status` (inherited when not given)
    and its default `message` in its class line:
    `class NotFound(KeystileError, code="not_found", http_status=404, message=...)`.
    """

    code = "error"
    http_status = 400
    message = "The request could not be completed."
    # The tightest rate limit the request was counted under, for the RateLimit-* headers.
    limit_status: LimitStatus | None = None

    def __init_subclass__(
        cls,
        *,
        code: str | None = None,
        http_status: int | None = None,
        message: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if http_status is not None:
            cls.http_status = http_status
        if message is not None:
            cls.message = message

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message

    def with_limits(self, status: LimitStatus | None) -> Self:
        """Return this error, noting the rate limit the refused request was counted under."""
        self.limit_status = status
        return self


class InvalidInput(
    KeystileError, code="invalid_input", http_status=422, message="The input is not valid."
):
    """The input is well-formed but not acceptable."""


class MalformedForm(
    KeystileError,
    code="malformed_request",
    http_status=400,
    message=(
        "The form could not be read: it is not valid UTF-8 text. Reload the page and send it"
        " again; a program posting it must encode it as UTF-8."
    ),
):
    """The request body could not be read: malformed JSON, or JSON or a form that is not
    UTF-8 (raw or percent-encoded) (S24).

    Raised for forms (web/forms.py); web/errors.py answers the JSON cases itself.
    """


class PasswordPolicyViolation(
    InvalidInput, code="weak_password", message="The password does not meet the password policy."
):
    """A new password breaks the password policy (S1, S2)."""


class PasswordTooLong(
    PasswordPolicyViolation, code="password_too_long", message="The password is too long."
):
    """A password, new or at login, is over the maximum length (S1).

    Refused before any hash is spent. At login it says nothing about the account (no
    account has a longer password) and does not call the password weak: it is not new.
    """


class InvalidScope(
    InvalidInput, code="invalid_scope", message="The requested scope is not available."
):
    """A token request asked for a scope this deployment does not grant."""


class AuthError(
    KeystileError, code="not_authenticated", http_status=401, message="Authentication is required."
):
    """Authentication failed or is missing."""


class InvalidCredentials(
    AuthError, code="invalid_credentials", message="The email or password is incorrect."
):
    """Unknown user, wrong password or disabled account: deliberately indistinguishable (S6)."""


class NotAuthenticated(AuthError):
    """No valid session or token came with the request."""


class InvalidToken(AuthError, code="invalid_token", message="The access token is not valid."):
    """A bearer token is malformed, forged, or not meant for us (S13, S14, S15).

    One code for every way a token can be bad, so the answer is no oracle.
    """


class TokenExpired(InvalidToken, code="token_expired", message="The access token has expired."):
    """A genuine access token past its `exp`: the client should refresh."""


class TokenRevoked(
    InvalidToken, code="token_revoked", message="The access token has been revoked."
):
    """A genuine access token issued before the user's last "log out everywhere" (S17)."""


class InvalidRefreshToken(
    AuthError,
    code="invalid_refresh_token",
    message="The refresh token is unknown, used, expired or revoked: log in again.",
):
    """A refresh token is unknown, used, expired, revoked, or its family is (S16)."""


class Forbidden(KeystileError, code="forbidden", http_status=403, message="This is not allowed."):
    """The caller is known but may not do this."""


class CsrfRejected(Forbidden, code="csrf_failed", message="Cross-site request refused."):
    """A cookie-authenticated state change came from another site (S11)."""


class InsufficientScope(
    Forbidden, code="insufficient_scope", message="The access token does not grant this."
):
    """A bearer token lacks a scope the endpoint requires."""


class EmailNotVerified(
    Forbidden,
    code="email_not_verified",
    message=(
        "Confirm your email address first: follow the link in the mail we sent, "
        "or ask for a new one."
    ),
):
    """The password was right, but `email_verification = "required"` and the address is not."""


class InvalidLinkToken(
    KeystileError,
    code="invalid_token",
    http_status=400,
    message="This link is not valid any more. Ask for a new one.",
):
    """A token from a mail link is unknown, used, expired, or not for this (S34).

    One code for every way it can be bad, so the answer is no oracle.
    """


class NotFound(KeystileError, code="not_found", http_status=404, message="Nothing is here."):
    """What the request names does not exist, or is not the caller's to see."""


class Conflict(
    KeystileError,
    code="conflict",
    http_status=409,
    message="The request conflicts with the current state.",
):
    """The request conflicts with the current state (a concurrent change, a name in use)."""


class Overloaded(
    KeystileError, code="overloaded", http_status=503, message="The service is busy; retry shortly."
):
    """Admission control refused the work; the caller should retry later (S5)."""

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


class RateLimited(
    KeystileError, code="rate_limited", http_status=429, message="Too many attempts; retry later."
):
    """Too many requests or failed logins; retry after `retry_after` seconds (S27, S28).

    Every limit and every backoff answers with this same error, whether or not the
    account exists, so a refusal tells nothing about accounts (S6).
    """

    def __init__(
        self, retry_after: int, message: str | None = None, *, status: LimitStatus | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        self.status = status
        self.limit_status = status


class DependencyUnavailable(
    KeystileError,
    code="unavailable",
    http_status=503,
    message="A backing service is unavailable; retry shortly.",
):
    """PostgreSQL or Redis did not answer within its deadline (S29)."""

    def __init__(self, dependency: str, retry_after: int = 1) -> None:
        super().__init__()
        self.dependency = dependency
        self.retry_after = retry_after


# --- machine access (API keys, OAuth 2.0 clients, roles, admin API) ---


class InvalidApiKey(InvalidToken, message="The API key is not valid, has expired or was revoked."):
    """An API key is malformed, unknown, wrong, expired or revoked: one answer for all (S43)."""


class InvalidClient(AuthError, code="invalid_client", message="Client authentication failed."):
    """OAuth client authentication failed: unknown client or wrong secret (RFC 6749 5.2)."""

    def __init__(self, message: str | None = None, *, basic: bool = False) -> None:
        super().__init__(message)
        self.basic = basic  # the client tried HTTP Basic: answer with WWW-Authenticate: Basic


class InvalidRequest(
    InvalidInput,
    code="invalid_request",
    message="The request is missing a parameter or is malformed.",
):
    """An OAuth request is missing a parameter, repeats one, or mixes client auth methods."""


class UnsupportedGrantType(
    InvalidInput,
    code="unsupported_grant_type",
    message="Only grant_type=client_credentials is supported here.",
):
    """The token endpoint was asked for a grant it does not offer (RFC 6749 5.2)."""


class InvalidTarget(
    InvalidInput,
    code="invalid_target",
    message="The requested audience is not allowed for this client.",
):
    """The requested audience is not one this client may have tokens for (RFC 8707)."""


class ReauthenticationRequired(
    AuthError,
    code="reauthentication_required",
    message="Log in again with your password to do this.",
):
    """The action needs a password authentication more recent than `max_age` seconds (S45)."""

    def __init__(self, max_age: int, message: str | None = None) -> None:
        super().__init__(message)
        self.max_age = max_age


class ReauthenticationUnsupported(
    Forbidden,
    code="reauthentication_unsupported",
    message="An API key cannot re-authenticate; use a session or a token from a login instead.",
):
    """An API key asked to re-authenticate: only a user's login can prove the user again."""


class RoleRequired(
    Forbidden, code="role_required", message="Your account does not have the role this needs."
):
    """The caller lacks a role the endpoint requires."""


class UserRequired(
    Forbidden,
    code="user_required",
    message="This endpoint acts for a user; a client-credentials token has none.",
):
    """A client-credentials token reached an endpoint that acts for a user."""


class LastAdmin(
    Conflict,
    code="last_admin",
    message="This would leave no active admin; grant the admin role to someone else first.",
):
    """The change would leave no active admin (S45)."""


# --- second factors (docs/mfa.md) ---


class MfaRequired(
    AuthError,
    code="mfa_required",
    message="Enter a code from your authenticator app or a recovery code, or use a passkey.",
):
    """The password was right; a second factor must follow with `mfa_token` (S42).

    No session or token exists yet: the answer carries only the short-lived,
    single-use `mfa_token` bound to the user and the factors the user can use.
    """

    def __init__(self, mfa_token: str, factors: list[str]) -> None:
        super().__init__()
        self.mfa_token = mfa_token
        self.factors = factors


class InvalidMfaToken(
    AuthError,
    code="invalid_mfa_token",
    message="This sign-in has expired or was already completed; log in with your password again.",
):
    """An mfa_token is unknown, used, expired, worn out, or not for this endpoint (S42)."""


class InvalidMfaCode(
    AuthError,
    code="invalid_mfa_code",
    message="The code is not valid. Check your authenticator app and try again.",
):
    """A TOTP or recovery code is wrong, or was already used (S39, S40)."""


class FactorRequired(
    AuthError,
    code="factor_required",
    message="Removing your last second factor needs a current code from it.",
):
    """Removing the last second factor needs a current code from it (S42)."""


class InvalidPasskey(
    AuthError, code="invalid_passkey", message="The passkey could not be verified."
):
    """A passkey assertion did not verify: unknown credential, bad signature, counter (S41)."""


class InvalidWebAuthn(
    InvalidInput,
    code="invalid_webauthn",
    message="The passkey response is not valid for this site or has expired; try again.",
):
    """A WebAuthn response is malformed, too large, for another challenge, origin or rp id."""
