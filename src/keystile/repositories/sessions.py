"""Cookie sessions in PostgreSQL, keyed by the SHA-256 of the session id (S18)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from keystile.repositories.database import Database

__all__ = ["PostgresSessionRepository", "SessionRecord", "SessionRepository"]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A stored session joined with the state of its user."""

    id_hash: bytes
    user_id: UUID
    email: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    user_disabled: bool
    user_agent: str
    ip: str


_SELECT = (
    "SELECT s.id_hash, s.user_id, u.email, s.created_at, s.last_seen_at, s.expires_at, "
    "s.revoked_at, u.disabled_at IS NOT NULL AS user_disabled, s.user_agent, s.ip "
    "FROM sessions s JOIN users u ON u.id = s.user_id"
)


class SessionRepository(Protocol):
    """What services need from session storage."""

    async def insert_session(
        self, id_hash: bytes, user_id: UUID, expires_at: datetime, user_agent: str, ip: str
    ) -> None: ...
    async def select_session(self, id_hash: bytes) -> SessionRecord | None: ...
    async def touch_session(self, id_hash: bytes, seen_at: datetime) -> None: ...
    async def revoke_session(self, id_hash: bytes) -> bool: ...
    async def revoke_user_sessions(self, user_id: UUID, *, keep: bytes | None = None) -> int: ...


class PostgresSessionRepository:
    """Sessions table access; lookups go through the primary key."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def insert_session(
        self, id_hash: bytes, user_id: UUID, expires_at: datetime, user_agent: str, ip: str
    ) -> None:
        await self._db.execute(
            "INSERT INTO sessions (id_hash, user_id, expires_at, user_agent, ip) "
            "VALUES ($1, $2, $3, $4, $5)",
            id_hash,
            user_id,
            expires_at,
            user_agent[:256],
            ip[:64],
        )

    async def select_session(self, id_hash: bytes) -> SessionRecord | None:
        row = await self._db.fetchrow(f"{_SELECT} WHERE s.id_hash = $1", id_hash)
        return None if row is None else SessionRecord(**dict(row))

    async def touch_session(self, id_hash: bytes, seen_at: datetime) -> None:
        """Slide `last_seen_at` forward (never backward, whatever order writes land in)."""
        await self._db.execute(
            "UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2",
            id_hash,
            seen_at,
        )

    async def revoke_session(self, id_hash: bytes) -> bool:
        status = await self._db.execute(
            "UPDATE sessions SET revoked_at = now() WHERE id_hash = $1 AND revoked_at IS NULL",
            id_hash,
        )
        return status.endswith(" 1")

    async def revoke_user_sessions(self, user_id: UUID, *, keep: bytes | None = None) -> int:
        """Revoke every live session of the user except `keep`; return how many."""
        status = await self._db.execute(
            "UPDATE sessions SET revoked_at = now() "
            "WHERE user_id = $1 AND revoked_at IS NULL AND id_hash IS DISTINCT FROM $2",
            user_id,
            keep,
        )
        return int(status.rsplit(" ", 1)[-1])
