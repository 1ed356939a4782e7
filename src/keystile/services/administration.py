"""The admin API's operations on users: list, show, disable, enable, log out, roles (S45).

Every change is audited with the acting admin's id. The guards (admin role, recent
authentication) are the web layer's `requires_admin`; this service trusts its caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from keystile.errors import InvalidInput, NotFound
from keystile.repositories.api_keys import ApiKeyRecord
from keystile.repositories.audit import AuditEvent, AuditRepository
from keystile.repositories.user_admin import PostgresUserAdminRepository, UserFilter
from keystile.repositories.users import User, UserRepository
from keystile.services.api_keys import ApiKeyService
from keystile.services.paging import decode_cursor, split_page
from keystile.services.revocation import TokenEpochs, TokenRevoker
from keystile.services.roles import RoleService
from keystile.services.sessions import SessionService, SessionView
from keystile.services.types import ClientInfo, Principal

__all__ = ["AdministrationService", "UserDetail", "UserPage"]

_RECENT_EVENTS = 20


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[User]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class UserDetail:
    user: User
    sessions: list[SessionView]
    api_keys: list[ApiKeyRecord]
    events: list[AuditEvent]


@dataclass(frozen=True, slots=True)
class AdministrationService:
    """What an admin may do to accounts."""

    users: UserRepository
    repository: PostgresUserAdminRepository
    sessions: SessionService
    revoker: TokenRevoker
    epochs: TokenEpochs
    api_keys: ApiKeyService
    roles: RoleService
    audit: AuditRepository

    async def list_users(self, where: UserFilter, cursor: str | None, limit: int) -> UserPage:
        """Return a page of users, oldest first, and the cursor of the next page (if any)."""
        if where.role is not None and where.role not in self.roles.known:
            raise InvalidInput(f"role: one of {', '.join(sorted(self.roles.known))}.")
        after = None if not cursor else decode_cursor(cursor)
        users = await self.repository.select_users_page(where, after, limit + 1)
        return UserPage(*split_page(users, limit))

    async def show_user(self, user_id: UUID) -> UserDetail:
        """Return the user with its live sessions, API keys and recent audit events."""
        user = await self._user(user_id)
        # The sessions are listed as the user would see them (none is "current").
        as_owner = Principal(user_id=user.id, email=user.email, via="admin")
        sessions = await self.sessions.list_sessions(as_owner)
        keys = await self.api_keys.list_keys(user.id)
        events = await self.audit.select_recent(_RECENT_EVENTS, user.id)
        return UserDetail(user, sessions, keys, events)

    async def disable(self, admin: Principal, user_id: UUID, client: ClientInfo) -> None:
        """Disable the user: its sessions, tokens and API keys end (`LastAdmin` protects)."""
        disabled = await self.repository.disable_user(user_id)
        if disabled is None:
            raise NotFound("No such user.")
        ended = await self.sessions.end_all(user_id)
        await self.revoker.revoke_user(user_id, reason="disabled", ip=client.ip)
        keys = await self.api_keys.revoke_all(user_id)
        await self._record(
            "user_disabled", admin, user_id, client, sessions_ended=ended, api_keys_revoked=keys
        )

    async def enable(self, admin: Principal, user_id: UUID, client: ClientInfo) -> None:
        """Let a disabled user log in again (its revoked API keys stay revoked)."""
        if await self.repository.enable_user(user_id) is None:
            raise NotFound("No such user.")
        await self.epochs.invalidate(user_id)  # bearer checks load it as active again
        await self._record("user_enabled", admin, user_id, client)

    async def logout(self, admin: Principal, user_id: UUID, client: ClientInfo) -> None:
        """End every session, refresh-token family and access token of the user.

        Like the user's own "log out everywhere", this leaves API keys alone.
        """
        if await self.users.bump_token_epoch(user_id) is None:
            raise NotFound("No such user.")
        ended = await self.sessions.end_all(user_id)
        await self.revoker.revoke_user(user_id, reason="admin_logout", ip=client.ip)
        await self._record("admin_logout", admin, user_id, client, sessions_ended=ended)

    async def set_roles(
        self, admin: Principal, user_id: UUID, roles: list[str], client: ClientInfo
    ) -> User:
        """Replace the user's roles (audited by `RoleService`); `LastAdmin` protects."""
        return await self.roles.set_roles(user_id, roles, by=admin.user_id, client=client)

    async def _user(self, user_id: UUID) -> User:
        user = await self.users.select_user_by_id(user_id)
        if user is None:
            raise NotFound("No such user.")
        return user

    async def _record(
        self, kind: str, admin: Principal, user_id: UUID, client: ClientInfo, **detail: object
    ) -> None:
        await self.audit.record(
            kind,
            user_id=user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            admin_id=str(admin.user_id),
            via="admin_api",
            **detail,
        )
