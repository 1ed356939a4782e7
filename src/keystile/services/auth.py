"""Registration and password login."""

from __future__ import annotations

import logging
from uuid import UUID

from keystile import metrics
from keystile.errors import (
    Conflict,
    DependencyUnavailable,
    InvalidCredentials,
    InvalidInput,
    NotAuthenticated,
    Overloaded,
    RateLimited,
)
from keystile.repositories.audit import PostgresAuditLog
from keystile.repositories.users import User, UserRepository
from keystile.services.account_hooks import AccountHooks
from keystile.services.credentials import CredentialCache
from keystile.services.login_throttle import LoginThrottle
from keystile.services.password_policy import PasswordPolicy
from keystile.services.passwords import PasswordHasher
from keystile.services.revocation import TokenRevoker
from keystile.services.sessions import SessionService
from keystile.services.types import ClientInfo, Principal

__all__ = ["AuthService"]

_log = logging.getLogger(__name__)


class AuthService:
    """Register users and check their passwords."""

    def __init__(
        self,
        users: UserRepository,
        sessions: SessionService,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        audit: PostgresAuditLog,
        credentials: CredentialCache,
        throttle: LoginThrottle,
        *,
        revoker: TokenRevoker,
        hooks: AccountHooks | None = None,
    ) -> None:
        self._users = users
        self._hooks = hooks
        self._credentials = credentials
        self._revoker = revoker
        self._sessions = sessions
        self._hasher = hasher
        self._policy = policy
        self._audit = audit
        self._throttle = throttle

    async def register(self, email: str, password: str, client: ClientInfo) -> None:
        """Create an account, or do nothing if the email is taken.

        Both cases cost one hash and return the same way, so the answer does not
        tell a caller which emails have accounts (S6).
        """
        password = self._policy.check_new(password)
        password_hash = await self._hasher.hash(password)
        user = await self._users.insert_user(
            email,
            password_hash,
            then=self._hooks.registered_in_transaction if self._hooks else None,
        )
        if user is None:
            await self._audit.record(
                "register_existing_email", ip=client.ip, user_agent=client.user_agent
            )
            return
        await self._audit.record(
            "register", user_id=user.id, ip=client.ip, user_agent=client.user_agent
        )

    async def authenticate(self, email: str, password: str, client: ClientInfo) -> User:
        """Return the user whose credentials these are, or raise `InvalidCredentials`.

        Unknown users and disabled users cost a dummy verification, so every failure
        takes the same time and gives the same error (S6). While failures for this
        email back off, `RateLimited` comes before any password is checked (S28).
        A repeat of credentials that verified moments ago skips the hash (the
        credential cache); legacy hashes and hashes with older parameters are
        replaced by argon2id on success (S4).
        """
        outcome = "error"
        try:
            user, outcome = await self._check_credentials(email, password, client)
        except InvalidInput:
            outcome = "rejected"
            raise
        except Overloaded:
            outcome = "overloaded"
            raise
        except RateLimited:
            outcome = "throttled"
            raise
        except DependencyUnavailable:
            outcome = "unavailable"
            raise
        finally:
            metrics.LOGINS.labels(outcome).inc()
        if user is None:
            raise InvalidCredentials()
        if self._hooks is not None:
            await self._hooks.authenticated(user, client)
        return user

    async def _check_credentials(
        self, email: str, password: str, client: ClientInfo
    ) -> tuple[User | None, str]:
        # Returns the user (None if the credentials are wrong) and the outcome for metrics.
        password = self._policy.check_length(password)
        await self._throttle.check(email, client)
        user = await self._users.select_user_by_email(email)
        if user is None or not user.is_active:
            await self._credentials.verify_dummy(password)
            await self._audit.record(
                "login_failed",
                user_id=user.id if user else None,
                ip=client.ip,
                user_agent=client.user_agent,
                reason="account",
            )
            await self._throttle.failed(email, client, user.id if user else None)
            return None, "unknown_account" if user is None else "disabled_account"
        if not await self._credentials.verify(user.id, user.password_hash, password):
            await self._audit.record(
                "login_failed", user_id=user.id, ip=client.ip, user_agent=client.user_agent
            )
            await self._throttle.failed(email, client, user.id)
            return None, "wrong_password"
        await self._throttle.succeeded(email, client)
        if self._hasher.needs_rehash(user.password_hash):
            user = await self._rehash(user, password)
        return user, "success"

    async def login(self, email: str, password: str, client: ClientInfo) -> tuple[User, str]:
        """Check the credentials and start a cookie session; return the user and session id."""
        user = await self.authenticate(email, password, client)
        session_id = await self._sessions.create(user, client)
        await self._audit.record(
            "login", user_id=user.id, ip=client.ip, user_agent=client.user_agent, via="session"
        )
        return user, session_id

    async def change_password(
        self,
        principal: Principal,
        current_password: str,
        new_password: str,
        client: ClientInfo,
    ) -> None:
        """Replace the password of the caller; it must prove the current one (S3).

        Every other session and every refresh-token family ends, and the token epoch
        moves on, so access tokens issued before now stop working on every worker
        (S3, S17). The calling cookie session survives; a bearer caller must log in again.
        """
        user = await self._users.select_user_by_id(principal.user_id)
        if user is None or not user.is_active:
            raise NotAuthenticated()
        current_password = self._policy.check_length(current_password)
        if not await self._hasher.verify(user.password_hash, current_password):
            await self._audit.record(
                "password_change_failed",
                user_id=user.id,
                ip=client.ip,
                user_agent=client.user_agent,
            )
            raise InvalidCredentials("The current password is incorrect.")
        new_hash = await self._hasher.hash(self._policy.check_new(new_password))
        if (
            await self._users.update_password_hash(
                user.id,
                user.password_hash,
                new_hash,
                changed=True,
                then=self._hooks.password_changed_in_transaction if self._hooks else None,
            )
            is None
        ):
            raise Conflict("The password was changed by another request; try again.")
        ended = await self._sessions.end_all(user.id, keep=principal.session_id_hash)
        await self._revoker.revoke_user(user.id, reason="password_change", ip=client.ip)
        await self._audit.record(
            "password_changed",
            user_id=user.id,
            ip=client.ip,
            user_agent=client.user_agent,
            sessions_ended=ended,
        )

    async def logout_everywhere(self, principal: Principal, client: ClientInfo) -> None:
        """End every session, refresh-token family and access token of the caller (S17)."""
        await self._users.bump_token_epoch(principal.user_id)
        ended = await self._sessions.end_all(principal.user_id)
        await self._revoker.revoke_user(principal.user_id, reason="logout_everywhere", ip=client.ip)
        await self._audit.record(
            "logout_everywhere",
            user_id=principal.user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            sessions_ended=ended,
        )

    async def logout(self, principal: Principal, client: ClientInfo) -> None:
        """End the caller's current session (S9) and record it."""
        if principal.session_id_hash is not None:
            await self._sessions.end(principal.session_id_hash)
        await self._audit.record(
            "session_revoked",
            user_id=principal.user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            reason="logout",
        )

    async def revoke_session(
        self, principal: Principal, public_id: UUID, client: ClientInfo
    ) -> bool:
        """End one of the caller's sessions by its public id; return True if it was this one.

        `NotFound` for a session that is not the caller's, as `SessionService` says.
        """
        was_current = await self._sessions.end_by_public_id(principal, public_id)
        await self._audit.record(
            "session_revoked",
            user_id=principal.user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            reason="revoked",
            current=was_current,
        )
        return was_current

    async def _rehash(self, user: User, password: str) -> User:
        # Upgrading the hash is best effort: a concurrent writer wins and we keep the old one.
        new_hash = await self._hasher.hash(password)
        updated = await self._users.update_password_hash(
            user.id, user.password_hash, new_hash, changed=False
        )
        if updated is not None:
            _log.info("password hash upgraded", extra={"user_id": str(user.id)})
            return updated
        return user
