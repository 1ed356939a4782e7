"""The domain error tree. `web/errors.py` maps each class to a status and a code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

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
    """Base of every error a service raises on purpose."""

    code = "error"
    message = "The request could not be completed."
    # The tightest rate limit the request was counted under, for the RateLimit-* headers.
    limit_status: LimitStatus | None = None

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message

    def with_limits(self, status: LimitStatus | None) -> Self:
        """Return this error, noting the rate limit the refused request was counted under."""
        self.limit_status = status
        return self


class InvalidInput(KeystileError):
    """The input is well-formed but not acceptable."""

    code = "invalid_input"
    message = "The input is not valid."


class PasswordPolicyViolation(InvalidInput):
    """A new password breaks the password policy (S1, S2)."""

    code = "weak_password"
    message = "The password does not meet the password policy."


class PasswordTooLong(PasswordPolicyViolation):
    """A password, new or at login, is over the maximum length (S1).

    Refused before any hash is spent. At login it says nothing about the account (no
    account has a longer password) and does not call the password weak: it is not new.
    """

    code = "password_too_long"
    message = "The password is too long."


class InvalidScope(InvalidInput):
    """A token request asked for a scope this deployment does not grant."""

    code = "invalid_scope"
    message = "The requested scope is not available."


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


class InvalidToken(AuthError):
    """A bearer token is malformed, forged, or not meant for us (S13, S14, S15).

    One code for every way a token can be bad, so the answer is no oracle.
    """

    code = "invalid_token"
    message = "The access token is not valid."


class TokenExpired(InvalidToken):
    """A genuine access token past its `exp`: the client should refresh."""

    code = "token_expired"
    message = "The access token has expired."


class TokenRevoked(InvalidToken):
    """A genuine access token issued before the user's last "log out everywhere" (S17)."""

    code = "token_revoked"
    message = "The access token has been revoked."


class InvalidRefreshToken(AuthError):
    """A refresh token is unknown, used, expired, revoked, or its family is (S16)."""

    code = "invalid_refresh_token"
    message = "The refresh token is not valid."


class Forbidden(KeystileError):
    """The caller is known but may not do this."""

    code = "forbidden"
    message = "This is not allowed."


class CsrfRejected(Forbidden):
    """A cookie-authenticated state change came from another site (S11)."""

    code = "csrf_failed"
    message = "Cross-site request refused."


class InsufficientScope(Forbidden):
    """A bearer token lacks a scope the endpoint requires."""

    code = "insufficient_scope"
    message = "The access token does not grant this."


class EmailNotVerified(Forbidden):
    """The password was right, but `email_verification = "required"` and the address is not."""

    code = "email_not_verified"
    message = (
        "Confirm your email address first: follow the link in the mail we sent, "
        "or ask for a new one."
    )


class InvalidLinkToken(KeystileError):
    """A token from a mail link is unknown, used, expired, or not for this (S34).

    One code for every way it can be bad, so the answer is no oracle.
    """

    code = "invalid_token"
    message = "This link is not valid any more. Ask for a new one."


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
        self.limit_status = status


class DependencyUnavailable(KeystileError):
    """PostgreSQL or Redis did not answer within its deadline (S29)."""

    code = "unavailable"
    message = "A backing service is unavailable; retry shortly."

    def __init__(self, dependency: str, retry_after: int = 1) -> None:
        super().__init__()
        self.dependency = dependency
        self.retry_after = retry_after


# --- machine access (API keys, OAuth 2.0 clients, roles, admin API) ---


class InvalidApiKey(InvalidToken):
    """An API key is malformed, unknown, wrong, expired or revoked: one answer for all (S43)."""

    message = "The API key is not valid, has expired or was revoked."


class InvalidClient(AuthError):
    """OAuth client authentication failed: unknown client or wrong secret (RFC 6749 5.2)."""

    code = "invalid_client"
    message = "Client authentication failed."

    def __init__(self, message: str | None = None, *, basic: bool = False) -> None:
        super().__init__(message)
        self.basic = basic  # the client tried HTTP Basic: answer with WWW-Authenticate: Basic


class InvalidRequest(InvalidInput):
    """An OAuth request is missing a parameter, repeats one, or mixes client auth methods."""

    code = "invalid_request"
    message = "The request is missing a parameter or is malformed."


class UnsupportedGrantType(InvalidInput):
    """The token endpoint was asked for a grant it does not offer (RFC 6749 5.2)."""

    code = "unsupported_grant_type"
    message = "Only grant_type=client_credentials is supported here."


class InvalidTarget(InvalidInput):
    """The requested audience is not one this client may have tokens for (RFC 8707)."""

    code = "invalid_target"
    message = "The requested audience is not allowed for this client."


class ReauthenticationRequired(AuthError):
    """The action needs a password authentication more recent than `max_age` seconds (S45)."""

    code = "reauthentication_required"
    message = "Log in again with your password to do this."

    def __init__(self, max_age: int, message: str | None = None) -> None:
        super().__init__(message)
        self.max_age = max_age


class ReauthenticationUnsupported(Forbidden):
    """An API key asked to re-authenticate: only a user's login can prove the user again."""

    code = "reauthentication_unsupported"
    message = "An API key cannot re-authenticate; use a session or a token from a login instead."


class RoleRequired(Forbidden):
    """The caller lacks a role the endpoint requires."""

    code = "role_required"
    message = "Your account does not have the role this needs."


class UserRequired(Forbidden):
    """A client-credentials token reached an endpoint that acts for a user."""

    code = "user_required"
    message = "This endpoint acts for a user; a client-credentials token has none."


class LastAdmin(Conflict):
    """The change would leave no active admin (S45)."""

    code = "last_admin"
    message = "This would leave no active admin; grant the admin role to someone else first."


# --- second factors (docs/mfa.md) ---


class MfaRequired(AuthError):
    """The password was right; a second factor must follow with `mfa_token` (S42).

    No session or token exists yet: the answer carries only the short-lived,
    single-use `mfa_token` bound to the user and the factors the user can use.
    """

    code = "mfa_required"
    message = "Enter a code from your authenticator app or a recovery code, or use a passkey."

    def __init__(self, mfa_token: str, factors: list[str]) -> None:
        super().__init__()
        self.mfa_token = mfa_token
        self.factors = factors


class InvalidMfaToken(AuthError):
    """An mfa_token is unknown, used, expired, worn out, or not for this endpoint (S42)."""

    code = "invalid_mfa_token"
    message = "This sign-in has expired or was already completed; log in with your password again."


class InvalidMfaCode(AuthError):
    """A TOTP or recovery code is wrong, or was already used (S39, S40)."""

    code = "invalid_mfa_code"
    message = "The code is not valid. Check your authenticator app and try again."


class FactorRequired(AuthError):
    """Removing the last second factor needs a current code from it (S42)."""

    code = "factor_required"
    message = "Removing your last second factor needs a current code from it."


class InvalidPasskey(AuthError):
    """A passkey assertion did not verify: unknown credential, bad signature, counter (S41)."""

    code = "invalid_passkey"
    message = "The passkey could not be verified."


class InvalidWebAuthn(InvalidInput):
    """A WebAuthn response is malformed, too large, for another challenge, origin or rp id."""

    code = "invalid_webauthn"
    message = "The passkey response is not valid for this site or has expired; try again."
