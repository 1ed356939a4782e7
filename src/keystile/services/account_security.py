"""The steps that password change, password reset, email change and logging out share.

`active_user`, the first of them (the account exists and is not disabled), is also
how second factors and passkeys load the user they act for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from keystile.errors import InvalidCredentials, NotAuthenticated
from keystile.repositories.audit import AuditLog
from keystile.repositories.users import User, UserRepository
from keystile.services.password_policy import PasswordPolicy
from keystile.services.passwords import PasswordHasher
from keystile.services.revocation import TokenRevoker
from keystile.services.sessions import SessionService
from keystile.services.types import ClientInfo, Principal

__all__ = ["AccountSecurity", "active_user"]


async def active_user(users: UserRepository, user_id: UUID) -> User:
    """Return the user `user_id`; `NotAuthenticated` if the account is gone or disabled."""
    user = await users.select_user_by_id(user_id)
    if user is None or not user.is_active:
        raise NotAuthenticated()
    return user


@dataclass(frozen=True, slots=True)
class AccountSecurity:
    """Prove an account's current password, hash a new one, end every login of an account.

    `AuthService` (password change, logout everywhere) and `EmailFlows` (email change,
    password reset, its undo) both go through here, so the steps cannot drift apart.
    """

    users: UserRepository
    hasher: PasswordHasher
    policy: PasswordPolicy
    sessions: SessionService
    revoker: TokenRevoker
    audit: AuditLog

    async def prove_password(
        self,
        principal: Principal,
        password: str,
        client: ClientInfo,
        *,
        failure: str,
        **detail: Any,
    ) -> User:
        """Return the caller's account if `password` is its current one.

        `NotAuthenticated` if the account is gone or disabled; `InvalidCredentials`
        (audited as `failure`, with `detail`) if the password is wrong (S3).
        """
        user = await active_user(self.users, principal.user_id)
        password = self.policy.check_length(password)
        if not await self.hasher.verify(user.password_hash, password):
            await self.audit.record(
                failure, user_id=user.id, ip=client.ip, user_agent=client.user_agent, **detail
            )
            raise InvalidCredentials("The current password is incorrect.")
        return user

    async def hash_new_password(self, password: str) -> str:
        """Return the hash of a new password; `PasswordPolicyViolation` if it is weak (S1, S2)."""
        return await self.hasher.hash(self.policy.check_new(password))

    async def end_logins(
        self,
        user_id: UUID,
        client: ClientInfo,
        *,
        reason: str,
        event: str | None = None,
        keep: bytes | None = None,
    ) -> None:
        """End every session (but `keep`) and token family of the user; audit it as `event`.

        Call after the token epoch moved on in PostgreSQL, so access tokens end too (S17).
        """
        ended = await self.sessions.end_all(user_id, keep=keep)
        await self.revoker.revoke_user(user_id, reason=reason, ip=client.ip)
        await self.audit.record(
            event or reason,
            user_id=user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            sessions_ended=ended,
        )
