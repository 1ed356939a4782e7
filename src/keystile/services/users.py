"""Account administration for operators (the `keystile user` commands)."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

from keystile.errors import Conflict, NotFound
from keystile.repositories.audit import AuditLog
from keystile.repositories.users import User, UserRepository
from keystile.services.password_policy import PasswordPolicy
from keystile.services.passwords import PasswordHasher
from keystile.services.revocation import TokenRevoker
from keystile.services.sessions import SessionService

__all__ = ["UserAdminService"]


@dataclass(frozen=True, slots=True)
class UserAdminService:
    """Create, disable and list accounts. Unlike self-registration, it says what happened."""

    users: UserRepository
    hasher: PasswordHasher
    policy: PasswordPolicy
    sessions: SessionService
    audit: AuditLog
    _: KW_ONLY
    revoker: TokenRevoker

    async def create_user(self, email: str, password: str) -> User:
        """Create an account; raise `Conflict` if the email is taken."""
        password = self.policy.check_new(password)
        user = await self.users.insert_user(email, await self.hasher.hash(password))
        if user is None:
            raise Conflict(f"An account for {email} already exists.")
        return user

    async def disable_user(self, email: str) -> User:
        """Disable an account: its sessions and tokens end at once (S10)."""
        user = await self.users.select_user_by_email(email)
        if user is None:
            raise NotFound(f"No account for {email}.")
        disabled = await self.users.disable_user(user.id)
        assert disabled is not None
        # After the user is disabled no session of it loads as live; ending them here
        # also drops every worker's cached copy (S10).
        ended = await self.sessions.end_all(user.id)
        await self.audit.record("user_disabled", user_id=user.id, via="cli", sessions_ended=ended)
        await self.revoker.revoke_user(user.id, reason="disabled")
        return disabled

    async def list_users(self, limit: int = 100, after_email: str = "") -> list[User]:
        """Return up to `limit` accounts ordered by email, after `after_email`."""
        return await self.users.select_users(limit, after_email)
