"""User roles: the built-in `admin` and the operator's `extra_roles` (S45).

Roles go into access-token claims for relying parties, but keystile itself checks
the user's *live* roles, read from the token-epoch cache (no I/O when warm) and
invalidated on every worker when they change: removing a role takes effect at
once, not when the last token carrying it expires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, InitVar, dataclass, field
from uuid import UUID

from keystile.errors import InvalidInput, NotFound
from keystile.repositories.audit import AuditLog
from keystile.repositories.user_admin import ADMIN_ROLE, PostgresUserAdminRepository
from keystile.repositories.users import User, UserRepository
from keystile.services.revocation import TokenEpochs
from keystile.services.types import ClientInfo

__all__ = ["ADMIN_ROLE", "RoleService"]


@dataclass(frozen=True, slots=True)
class RoleService:
    """Read, grant and remove roles."""

    users: UserRepository
    repository: PostgresUserAdminRepository
    epochs: TokenEpochs
    audit: AuditLog
    _: KW_ONLY
    extra_roles: InitVar[Iterable[str]]
    known: frozenset[str] = field(init=False)  # `admin` and the extra roles

    def __post_init__(self, extra_roles: Iterable[str]) -> None:
        object.__setattr__(self, "known", frozenset({ADMIN_ROLE, *extra_roles}))

    async def roles_of(self, user_id: UUID) -> frozenset[str]:
        """Return the live roles of an active user; none for a disabled or unknown one."""
        holder = await self.epochs.get(user_id)
        return frozenset() if holder is None else holder.roles

    async def set_roles(
        self,
        user_id: UUID,
        roles: Iterable[str],
        *,
        by: UUID | None,
        client: ClientInfo | None = None,
    ) -> User:
        """Replace the user's roles. `LastAdmin` if that leaves no active admin."""
        wanted = frozenset(roles)
        return await self._change(user_id, lambda _: wanted, wanted, by, client)

    async def grant(self, email: str, role: str, *, by: UUID | None = None) -> User:
        """Add `role` to the account with this email (the CLI's `user grant-role`)."""
        user = await self._by_email(email)
        return await self._change(user.id, lambda now: now | {role}, {role}, by, None)

    async def revoke(self, email: str, role: str, *, by: UUID | None = None) -> User:
        """Remove `role` from the account with this email (the CLI's `user revoke-role`)."""
        user = await self._by_email(email)
        return await self._change(user.id, lambda now: now - {role}, {role}, by, None)

    async def _by_email(self, email: str) -> User:
        user = await self.users.select_user_by_email(email)
        if user is None:
            raise NotFound(f"No account for {email}.")
        return user

    async def _change(
        self,
        user_id: UUID,
        change: Callable[[frozenset[str]], frozenset[str]],
        named: Iterable[str],
        by: UUID | None,
        client: ClientInfo | None,
    ) -> User:
        unknown = sorted(set(named) - self.known)
        if unknown:
            known = ", ".join(sorted(self.known))
            raise InvalidInput(f"Unknown role {', '.join(unknown)}; roles are: {known}.")
        changed = await self.repository.update_roles(user_id, change)
        if changed is None:
            raise NotFound("No such user.")
        before, user = changed
        await self.epochs.invalidate(user_id)
        if before != frozenset(user.roles):
            await self.audit.record(
                "roles_changed",
                user_id=user_id,
                ip=client.ip if client else "",
                user_agent=client.user_agent if client else "",
                admin_id=str(by) if by else None,
                via="admin_api" if by else "cli",
                added=sorted(frozenset(user.roles) - before),
                removed=sorted(before - frozenset(user.roles)),
            )
        return user
