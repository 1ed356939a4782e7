"""What the admin API needs from the users table: paging, roles, disable/enable (S45).

Every change to roles or to an admin's state runs under one transaction-scoped
advisory lock, so two admins removing each other at the same moment cannot leave
the deployment without an admin: the second one sees the first one's commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from keystile.errors import LastAdmin
from keystile.repositories.database import Database, PostgresRepository
from keystile.repositories.users import User, user_from_row

__all__ = ["ADMIN_ROLE", "PostgresUserAdminRepository", "UserFilter"]

ADMIN_ROLE = "admin"
_ADMIN_LOCK = 0x6B657973_61646D6E  # "keysadmn"
_COLUMNS = (
    "id, email, password_hash, password_changed_at, token_epoch, disabled_at, created_at, roles"
)


@dataclass(frozen=True, slots=True)
class UserFilter:
    """Which users an admin listing shows; None means "any"."""

    email_prefix: str | None = None
    disabled: bool | None = None
    role: str | None = None


def _like_prefix(prefix: str) -> str:
    escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class PostgresUserAdminRepository(PostgresRepository):
    """Admin reads and writes of users; writes drop the login cache entry of the user.

    `forget_cached` drops a user from the cache logins read through
    (`CachedUserRepository.forget_cached`).
    """

    def __init__(
        self,
        database: Database,
        forget_cached: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(database)
        self._forget_cached = forget_cached

    async def _changed(self, user: User) -> User:
        if self._forget_cached is not None:
            await self._forget_cached(user.email)
        return user

    async def select_users_page(
        self, where: UserFilter, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[User]:
        """Return up to `limit` users ordered by (created_at, id), after the cursor `after`.

        Keyset paging: a user created while an admin pages is appended at the end,
        never shifts a page, so no one is shown twice or skipped.
        """
        conditions: list[str] = []
        args: list[object] = []

        def param(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if after is not None:
            conditions.append(f"(created_at, id) > ({param(after[0])}, {param(after[1])})")
        if where.email_prefix:
            pattern = param(_like_prefix(where.email_prefix))
            conditions.append(f"lower(email) LIKE {pattern} ESCAPE '\\'")
        if where.disabled is not None:
            conditions.append(
                "disabled_at IS NOT NULL" if where.disabled else "disabled_at IS NULL"
            )
        if where.role is not None:
            conditions.append(f"roles @> ARRAY[{param(where.role)}::text]")
        clause = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        return await self._db.fetch_all(
            user_from_row,
            f"SELECT {_COLUMNS} FROM users {clause}ORDER BY created_at, id LIMIT {param(limit)}",
            *args,
        )

    async def update_roles(
        self, user_id: UUID, change: Callable[[frozenset[str]], frozenset[str]]
    ) -> tuple[frozenset[str], User] | None:
        """Replace the user's roles by `change(current)`; return (before, user), None if unknown.

        Raise `LastAdmin` when this would take the admin role from the last active admin.
        """
        async with self._db.transaction() as connection:
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _ADMIN_LOCK)
            current = await connection.fetchval(
                "SELECT roles FROM users WHERE id = $1 FOR UPDATE", user_id
            )
            if current is None:
                return None
            before = frozenset(current)
            after = change(before)
            if ADMIN_ROLE in before and ADMIN_ROLE not in after:
                await _keep_an_admin(connection, user_id)
            row = await connection.fetchrow(
                f"UPDATE users SET roles = $2, updated_at = now() WHERE id = $1 "
                f"RETURNING {_COLUMNS}",
                user_id,
                sorted(after),
            )
        assert row is not None
        return before, await self._changed(user_from_row(row))

    async def disable_user(self, user_id: UUID) -> User | None:
        """Disable the user and bump its token epoch; None if unknown.

        Raise `LastAdmin` if it is the last active admin.
        """
        async with self._db.transaction() as connection:
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _ADMIN_LOCK)
            await _keep_an_admin(connection, user_id)
            row = await connection.fetchrow(
                f"UPDATE users SET disabled_at = coalesce(disabled_at, now()), "
                f"token_epoch = token_epoch + 1, updated_at = now() "
                f"WHERE id = $1 RETURNING {_COLUMNS}",
                user_id,
            )
        return None if row is None else await self._changed(user_from_row(row))

    async def enable_user(self, user_id: UUID) -> User | None:
        """Clear the user's disabled mark; None if unknown."""
        row = await self._db.fetchrow(
            f"UPDATE users SET disabled_at = NULL, updated_at = now() WHERE id = $1 "
            f"RETURNING {_COLUMNS}",
            user_id,
        )
        return None if row is None else await self._changed(user_from_row(row))


async def _keep_an_admin(connection: asyncpg.Connection, user_id: UUID) -> None:
    """Raise `LastAdmin` if `user_id` is an active admin and no other active admin exists."""
    row = await connection.fetchrow(
        "SELECT "
        "  EXISTS (SELECT 1 FROM users WHERE id = $1 AND disabled_at IS NULL "
        "          AND roles @> ARRAY[$2::text]) AS is_admin, "
        "  EXISTS (SELECT 1 FROM users WHERE id <> $1 AND disabled_at IS NULL "
        "          AND roles @> ARRAY[$2::text]) AS others",
        user_id,
        ADMIN_ROLE,
    )
    if row["is_admin"] and not row["others"]:
        raise LastAdmin()
