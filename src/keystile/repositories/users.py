"""Users in PostgreSQL (the login lookup by email is cached by `CachedUserRepository`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from keystile.repositories.database import PostgresRepository
from keystile.stores.cache import SharedCopy

__all__ = [
    "AfterWrite",
    "PostgresUserRepository",
    "User",
    "UserRepository",
    "user_from_json",
    "user_from_row",
    "user_to_json",
]

_COLUMNS = (
    "id, email, password_hash, password_changed_at, token_epoch, disabled_at, created_at, "
    "roles, email_verified_at, mfa_factors"
)


@dataclass(frozen=True, slots=True)
class User:
    """A stored account."""

    id: UUID
    email: str
    password_hash: str
    password_changed_at: datetime
    token_epoch: int
    disabled_at: datetime | None
    created_at: datetime
    roles: tuple[str, ...] = ()  # "admin" and the extra roles of settings (docs/machine-access.md)
    email_verified_at: datetime | None = None
    # "totp" and/or "passkey": with any, a password login needs a second step (S42).
    mfa_factors: tuple[str, ...] = ()

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None


def _user(row: asyncpg.Record | None) -> User | None:
    return None if row is None else user_from_row(row)


def user_from_row(row: asyncpg.Record) -> User:
    """Return the user a row of `_COLUMNS` describes."""
    values = dict(row)
    values["roles"] = tuple(row["roles"])
    if "mfa_factors" in values:
        values["mfa_factors"] = tuple(values["mfa_factors"])
    return User(**values)


def user_to_json(user: User) -> dict[str, Any]:
    """Return `user` as JSON-safe values, for caches."""
    return {
        "id": str(user.id),
        "email": user.email,
        "password_hash": user.password_hash,
        "password_changed_at": user.password_changed_at.isoformat(),
        "token_epoch": user.token_epoch,
        "disabled_at": user.disabled_at.isoformat() if user.disabled_at else None,
        "created_at": user.created_at.isoformat(),
        "roles": list(user.roles),
        "email_verified_at": (
            user.email_verified_at.isoformat() if user.email_verified_at else None
        ),
        "mfa_factors": list(user.mfa_factors),
    }


def user_from_json(data: dict[str, Any]) -> User:
    """Return the user `user_to_json` described; raise ValueError if it is not one."""
    try:
        return User(
            id=UUID(data["id"]),
            email=data["email"],
            password_hash=data["password_hash"],
            password_changed_at=datetime.fromisoformat(data["password_changed_at"]),
            token_epoch=int(data["token_epoch"]),
            disabled_at=(
                datetime.fromisoformat(data["disabled_at"]) if data["disabled_at"] else None
            ),
            created_at=datetime.fromisoformat(data["created_at"]),
            roles=tuple(data.get("roles", ())),
            email_verified_at=(
                datetime.fromisoformat(data["email_verified_at"])
                if data["email_verified_at"]
                else None
            ),
            mfa_factors=tuple(data.get("mfa_factors", ())),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a cached user: {exc}") from None


# Runs inside the transaction of a user write, with its connection and the written user:
# for rows that must commit or roll back with it (the mail outbox).
AfterWrite = Callable[[asyncpg.Connection, User], Awaitable[None]]


class UserRepository(Protocol):
    """What services need from user storage.

    Methods named `select_*` only read; every other method writes (a caching
    wrapper must invalidate after each of them, and a test holds it to that).
    """

    async def insert_user(
        self, email: str, password_hash: str, *, then: AfterWrite | None = None
    ) -> User | None: ...
    async def select_user_by_email(
        self, email: str, *, shared: SharedCopy | None = None
    ) -> User | None:
        """`shared`: a cache's Redis copy already read (repositories without a cache ignore it)."""
        ...

    async def select_user_by_id(self, user_id: UUID) -> User | None: ...
    async def update_password_hash(
        self,
        user_id: UUID,
        old_hash: str,
        new_hash: str,
        *,
        changed: bool,
        then: AfterWrite | None = None,
    ) -> User | None: ...
    async def disable_user(self, user_id: UUID) -> User | None: ...
    async def bump_token_epoch(self, user_id: UUID) -> User | None: ...
    async def select_users(self, limit: int, after_email: str = "") -> list[User]: ...
    async def insert_users(self, rows: Sequence[tuple[str, str]]) -> list[str]: ...


class PostgresUserRepository(PostgresRepository):
    """Users table access; every query here is served by an index."""

    async def insert_user(
        self, email: str, password_hash: str, *, then: AfterWrite | None = None
    ) -> User | None:
        """Insert a user; return None when the email is taken (case-insensitively).

        `then` runs in the same transaction, only if the user was inserted.
        """
        return await self._write(
            then,
            f"INSERT INTO users (email, password_hash) VALUES ($1, $2) "
            f"ON CONFLICT (lower(email)) DO NOTHING RETURNING {_COLUMNS}",
            email,
            password_hash,
        )

    async def _write(self, then: AfterWrite | None, query: str, *args: Any) -> User | None:
        if then is None:
            return _user(await self._db.fetchrow(query, *args))
        async with self._db.transaction() as connection:
            user = _user(await connection.fetchrow(query, *args))
            if user is not None:
                await then(connection, user)
        return user

    async def select_user_by_email(
        self, email: str, *, shared: SharedCopy | None = None
    ) -> User | None:
        """Return the user with this email (any case); from the read replica, if one is set.

        A login's lookup (on a cache miss) tolerates lag: a user seconds old may be
        missing there and the login answers like a wrong password, to be retried.
        """
        row = await self._db.reads.fetchrow(
            f"SELECT {_COLUMNS} FROM users WHERE lower(email) = lower($1)", email
        )
        return _user(row)

    async def select_user_by_id(self, user_id: UUID) -> User | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)
        return _user(row)

    async def update_password_hash(
        self,
        user_id: UUID,
        old_hash: str,
        new_hash: str,
        *,
        changed: bool,
        then: AfterWrite | None = None,
    ) -> User | None:
        """Swap the hash if it is still `old_hash` (compare-and-set).

        `changed` marks a new password rather than a rehash of the same one.

        A new password also bumps the token epoch, ending every access token (S3, S17).
        Returns None when another writer got there first. `then` runs in the same
        transaction, only if the hash was swapped.
        """
        user = await self._write(
            then,
            f"UPDATE users SET password_hash = $3, updated_at = now(), "
            f"password_changed_at = CASE WHEN $4 THEN now() ELSE password_changed_at END, "
            f"token_epoch = token_epoch + CASE WHEN $4 THEN 1 ELSE 0 END "
            f"WHERE id = $1 AND password_hash = $2 RETURNING {_COLUMNS}",
            user_id,
            old_hash,
            new_hash,
            changed,
        )
        return user

    async def disable_user(self, user_id: UUID) -> User | None:
        """Mark the user disabled and bump its token epoch (S10).

        From this commit on no session of the user loads as live (sessions are read
        joined with the user); `SessionService.end_all` then revokes them and drops
        their cached copies on every worker.
        """
        row = await self._db.fetchrow(
            f"UPDATE users SET disabled_at = coalesce(disabled_at, now()), "
            f"token_epoch = token_epoch + 1, updated_at = now() "
            f"WHERE id = $1 RETURNING {_COLUMNS}",
            user_id,
        )
        return _user(row)

    async def bump_token_epoch(self, user_id: UUID) -> User | None:
        """Invalidate every access token of the user issued so far (S17)."""
        row = await self._db.fetchrow(
            f"UPDATE users SET token_epoch = token_epoch + 1, updated_at = now() "
            f"WHERE id = $1 RETURNING {_COLUMNS}",
            user_id,
        )
        return _user(row)

    async def select_users(self, limit: int, after_email: str = "") -> list[User]:
        return await self._db.fetch_all(
            user_from_row,
            f"SELECT {_COLUMNS} FROM users WHERE lower(email) > lower($1) "
            f"ORDER BY lower(email) LIMIT $2",
            after_email,
            limit,
        )

    async def insert_users(self, rows: Sequence[tuple[str, str]]) -> list[str]:
        """Insert (email, password_hash) pairs in one statement; return the emails inserted.

        Emails already taken (case-insensitively) are skipped, so re-running an import
        adds nothing twice.
        """
        inserted = await self._db.fetch(
            "INSERT INTO users (email, password_hash) "
            "SELECT * FROM unnest($1::text[], $2::text[]) "
            "ON CONFLICT (lower(email)) DO NOTHING RETURNING email",
            [email for email, _ in rows],
            [password_hash for _, password_hash in rows],
        )
        return [record["email"] for record in inserted]

    # --- writes inside a caller's transaction (mail flows): the caller then calls
    # `CachedUserRepository.forget_cached`, after the commit

    async def set_password_hash(
        self, connection: asyncpg.Connection, user_id: UUID, new_hash: str
    ) -> User | None:
        """Set a new password (a reset: nothing to compare) and bump the token epoch."""
        row = await connection.fetchrow(
            f"UPDATE users SET password_hash = $2, password_changed_at = now(), "
            f"token_epoch = token_epoch + 1, updated_at = now() "
            f"WHERE id = $1 AND disabled_at IS NULL RETURNING {_COLUMNS}",
            user_id,
            new_hash,
        )
        return _user(row)

    async def set_verified_email(
        self, connection: asyncpg.Connection, user_id: UUID, email: str
    ) -> User | None:
        """Make `email` the user's address, verified now.

        Raises `asyncpg.UniqueViolationError` if another account has that address.
        """
        row = await connection.fetchrow(
            f"UPDATE users SET email = $2, email_verified_at = now(), updated_at = now() "
            f"WHERE id = $1 AND disabled_at IS NULL RETURNING {_COLUMNS}",
            user_id,
            email,
        )
        return _user(row)
