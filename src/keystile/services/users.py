"""Account administration for operators (the `keystile user` commands)."""

from __future__ import annotations

from keystile.errors import Conflict, NotFound
from keystile.repositories.audit import AuditLog
from keystile.repositories.users import User, UserRepository
from keystile.services.password_policy import PasswordPolicy
from keystile.services.passwords import PasswordHasher
from keystile.services.revocation import TokenRevoker
from keystile.services.sessions import SessionService

__all__ = ["UserAdminService"]


class UserAdminService:
    """Create, disable and list accounts. Unlike self-registration, it says what happened."""

    def __init__(
        self,
        users: UserRepository,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        sessions: SessionService,
        audit: AuditLog,
        *,
        revoker: TokenRevoker,
    ) -> None:
        self._revoker = revoker
        self._users = users
        self._hasher = hasher
        self._policy = policy
        self._sessions = sessions
        self._audit = audit

    async def create_user(self, email: str, password: str) -> User:
        """Create an account; raise `Conflict` if the email is taken."""
        password = self._policy.check_new(password)
        user = await self._users.insert_user(email, await self._hasher.hash(password))
        if user is None:
            raise Conflict(f"An account for {email} already exists.")
        return user

    async def disable_user(self, email: str) -> User:
        """Disable an account: its sessions and tokens end at once (S10)."""
        user = await self._users.select_user_by_email(email)
        if user is None:
            raise NotFound(f"No account for {email}.")
        disabled = await self._users.disable_user(user.id)
        assert disabled is not None
        # After the user is disabled no session of it loads as live; ending them here
        # also drops every worker's cached copy (S10).
        ended = await self._sessions.end_all(user.id)
        await self._audit.record("user_disabled", user_id=user.id, via="cli", sessions_ended=ended)
        await self._revoker.revoke_user(user.id, reason="disabled")
        return disabled

    async def list_users(self, limit: int = 100, after_email: str = "") -> list[User]:
        """Return up to `limit` accounts ordered by email, after `after_email`."""
        return await self._users.select_users(limit, after_email)
