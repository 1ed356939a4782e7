"""Re-authentication: prove it is still you, without a new login (step-up, S42).

A caller whose login is older than `reauth_max_age_seconds` proves themselves again
with a password, a TOTP or recovery code, or one of their own passkeys. Each goes
through the checks its login counterpart uses: a password through the login gate
(rate limits, the per-account backoff, the credential cache, hash admission: 503
`overloaded` when over budget), a code through the second step's backoff, a passkey
through the same assertion checks with a challenge bound to the caller.

What is refreshed is the caller's own login, in place: a cookie session keeps its id
and gets auth_time now (PostgreSQL, then every worker's cached copy is dropped); a
bearer token's family gets auth_time now and a new access token comes back, while its
refresh token stays as it is. `amr` becomes the methods the login had, plus the one
just used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keystile.errors import (
    InvalidCredentials,
    InvalidMfaCode,
    InvalidPasskey,
    InvalidToken,
    InvalidWebAuthn,
    NotAuthenticated,
    ReauthenticationUnsupported,
)
from keystile.rates import Action
from keystile.repositories.audit import AuditLog
from keystile.services.mfa import MfaService
from keystile.services.passkeys import PasskeyService
from keystile.services.sessions import SessionService
from keystile.services.tokens import AccessGrant, PasswordAuthenticator, TokenService
from keystile.services.types import ClientInfo, Principal

__all__ = ["ReauthService", "Reauthenticated"]


@dataclass(frozen=True, slots=True)
class Reauthenticated:
    """A refreshed login: when and how; for a bearer caller, its new access token."""

    auth_time: datetime
    amr: tuple[str, ...]
    grant: AccessGrant | None = None


@dataclass(frozen=True, slots=True)
class ReauthService:
    """Refresh the caller's auth_time after a password, code or passkey (S42)."""

    authenticator: PasswordAuthenticator
    mfa: MfaService
    passkeys: PasskeyService
    sessions: SessionService
    tokens: TokenService
    audit: AuditLog

    async def with_password(
        self, principal: Principal, password: str, client: ClientInfo
    ) -> Reauthenticated:
        """Check the caller's password as a login would, then refresh the login.

        `InvalidCredentials` for a wrong password (counted by the login backoff:
        `RateLimited` with Retry-After once it runs), `Overloaded` when hashing is over
        its budget.
        """
        _check_caller(principal)
        try:
            found = await self.authenticator.authenticate(
                principal.email, password, client, action=Action.LOGIN
            )
        except InvalidCredentials as error:
            await self._failed(principal, client, "password")
            raise InvalidCredentials("The password is incorrect.").with_limits(
                error.limit_status
            ) from None
        if found.user.id != principal.user_id:  # the address moved to another account
            raise NotAuthenticated()
        return await self._refresh(principal, client, "pwd")

    async def with_code(
        self,
        principal: Principal,
        client: ClientInfo,
        *,
        code: str | None = None,
        recovery_code: str | None = None,
    ) -> Reauthenticated:
        """Check a TOTP or recovery code of the caller, then refresh the login.

        `InvalidMfaCode` for a wrong or replayed code (the second step's backoff).
        """
        _check_caller(principal)
        try:
            await self.mfa.reauthenticate(principal, client, code=code, recovery_code=recovery_code)
        except InvalidMfaCode:
            await self._failed(principal, client, "otp" if code is not None else "recovery_code")
            raise
        return await self._refresh(principal, client, "otp")

    async def passkey_options(self, principal: Principal) -> dict[str, Any]:
        """Return WebAuthn request options for one of the caller's passkeys."""
        _check_caller(principal)
        return await self.passkeys.reauthentication_options(principal)

    async def with_passkey(
        self, principal: Principal, credential: dict[str, Any], client: ClientInfo
    ) -> Reauthenticated:
        """Verify an assertion by one of the caller's own passkeys, then refresh the login."""
        _check_caller(principal)
        try:
            await self.passkeys.reauthenticate(principal, credential, client)
        except (InvalidPasskey, InvalidWebAuthn):
            await self._failed(principal, client, "passkey")
            raise
        return await self._refresh(principal, client, "hwk")

    async def _refresh(
        self, principal: Principal, client: ClientInfo, method: str
    ) -> Reauthenticated:
        amr = tuple(sorted(principal.amr | {method}))
        grant = None
        if principal.via == "session":
            assert principal.session_id_hash is not None  # every session principal has one
            await self.sessions.reauthenticated(principal.session_id_hash, amr)
            auth_time = datetime.now(UTC)
        else:
            grant = await self.tokens.reauthenticated(principal, amr)
            auth_time = grant.auth_time
        await self.audit.record(
            "reauthenticated",
            user_id=principal.user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            via=principal.via,
            method=method,
        )
        return Reauthenticated(auth_time, amr, grant)

    async def _failed(self, principal: Principal, client: ClientInfo, method: str) -> None:
        await self.audit.record(
            "reauthentication_failed",
            user_id=principal.user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            via=principal.via,
            method=method,
        )


def _check_caller(principal: Principal) -> None:
    # Only a user's own login can be refreshed: an API key has none (a client-credentials
    # token is refused before this, by `requires_auth`).
    if principal.via not in {"session", "bearer"} or principal.client_id is not None:
        raise ReauthenticationUnsupported()
    if principal.via == "bearer" and principal.family_id is None:
        # Issued before tokens named their family: nothing to refresh (checked before
        # any password is hashed).
        raise InvalidToken("This access token cannot be renewed; refresh it, then try again.")
