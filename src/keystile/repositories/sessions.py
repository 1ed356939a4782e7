"""Cookie sessions in PostgreSQL, keyed by the SHA-256 of the session id (S18)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from keystile.repositories.audit import LoginRecord
from keystile.repositories.database import PostgresRepository

__all__ = ["PostgresSessionRepository", "SessionRecord", "SessionRepository"]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A stored session joined with the state of its user.

    `public_id` is what the owner sees and revokes by: random, unrelated to the
    secret id in the cookie and to `id_hash`.
    """

    id_hash: bytes
    public_id: UUID
    user_id: UUID
    email: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    user_disabled: bool
    user_agent: str
    ip: str
    amr: tuple[str, ...] = ("pwd",)  # how the session was authenticated (RFC 8176)
    # When the user last proved who they are: the login, or a later re-authentication.
    auth_time: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-safe dict (for the Redis copy of the session cache)."""
        return {
            "id_hash": self.id_hash.hex(),
            "public_id": str(self.public_id),
            "user_id": str(self.user_id),
            "email": self.email,
            "created_at": self.created_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
            "user_disabled": self.user_disabled,
            "user_agent": self.user_agent,
            "ip": self.ip,
            "amr": list(self.amr),
            "auth_time": None if self.auth_time is None else self.auth_time.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionRecord:
        """Rebuild a record from `to_json` output."""
        revoked_at = data["revoked_at"]
        auth_time = data.get("auth_time")  # absent from copies cached before 0012
        return cls(
            id_hash=bytes.fromhex(data["id_hash"]),
            public_id=UUID(data["public_id"]),
            user_id=UUID(data["user_id"]),
            email=data["email"],
            created_at=datetime.fromisoformat(data["created_at"]),
            last_seen_at=datetime.fromisoformat(data["last_seen_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            revoked_at=None if revoked_at is None else datetime.fromisoformat(revoked_at),
            user_disabled=bool(data["user_disabled"]),
            user_agent=data["user_agent"],
            ip=data["ip"],
            amr=tuple(data.get("amr", ("pwd",))),
            auth_time=None if auth_time is None else datetime.fromisoformat(auth_time),
        )


# Housekeeping: one worker at a time, in batches small enough to hold locks briefly.
_EXPIRED_LOCK = 0x6B657973_73657373  # "keyssess"
_EXPIRED_BATCH = 5000

# The session and its audit event (`LoginRecord.audit_cte`): one statement, one commit.
_INSERT_SESSION = """
WITH session AS (
  INSERT INTO sessions (id_hash, user_id, expires_at, user_agent, ip, amr)
  VALUES ($1, $2, $3, $4, $5, $6)
){audit}
SELECT 1
"""

_SELECT = (
    "SELECT s.id_hash, s.public_id, s.user_id, u.email, s.created_at, s.last_seen_at, "
    "s.expires_at, s.revoked_at, u.disabled_at IS NOT NULL AS user_disabled, s.user_agent, s.ip, "
    "s.amr, coalesce(s.auth_time, s.created_at) AS auth_time "
    "FROM sessions s JOIN users u ON u.id = s.user_id"
)


def _record(row: Any) -> SessionRecord:
    values = dict(row)
    values["amr"] = tuple(values["amr"])
    return SessionRecord(**values)


class SessionRepository(Protocol):
    """What services need from session storage."""

    async def insert_session(
        self,
        id_hash: bytes,
        user_id: UUID,
        expires_at: datetime,
        user_agent: str,
        ip: str,
        *,
        login: LoginRecord,
    ) -> None: ...
    async def select_session(self, id_hash: bytes) -> SessionRecord | None: ...
    async def select_user_sessions(self, user_id: UUID, limit: int) -> list[SessionRecord]: ...
    async def touch_session(self, id_hash: bytes, seen_at: datetime) -> None: ...
    async def update_session_auth(self, id_hash: bytes, amr: tuple[str, ...]) -> bool: ...
    async def revoke_session(self, id_hash: bytes) -> bool: ...
    async def revoke_session_by_public_id(self, user_id: UUID, public_id: UUID) -> bytes | None: ...
    async def revoke_user_sessions(
        self, user_id: UUID, *, keep: bytes | None = None
    ) -> list[bytes]: ...


class PostgresSessionRepository(PostgresRepository):
    """Sessions table access; every lookup goes through an index."""

    async def insert_session(
        self,
        id_hash: bytes,
        user_id: UUID,
        expires_at: datetime,
        user_agent: str,
        ip: str,
        *,
        login: LoginRecord,
    ) -> None:
        """Insert a session and, in the same statement, its audit event (one round trip)."""
        audit, audit_values = login.audit_cte(7)
        values = (id_hash, user_id, expires_at, user_agent[:256], ip[:64], list(login.amr))
        await self._db.execute(_INSERT_SESSION.format(audit=audit), *values, *audit_values)

    async def select_session(self, id_hash: bytes) -> SessionRecord | None:
        return await self._db.fetch_one(_record, f"{_SELECT} WHERE s.id_hash = $1", id_hash)

    async def select_user_sessions(self, user_id: UUID, limit: int) -> list[SessionRecord]:
        """Return the user's unrevoked, unexpired sessions, newest first (partial index)."""
        return await self._db.fetch_all(
            _record,
            f"{_SELECT} WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > now() "
            f"ORDER BY s.created_at DESC LIMIT $2",
            user_id,
            limit,
        )

    async def touch_session(self, id_hash: bytes, seen_at: datetime) -> None:
        """Slide `last_seen_at` forward (never backward, whatever order writes land in)."""
        await self._db.execute(
            "UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2",
            id_hash,
            seen_at,
        )

    async def update_session_auth(self, id_hash: bytes, amr: tuple[str, ...]) -> bool:
        """Set a live session's auth_time to now and its amr; False if it is not live."""
        status = await self._db.execute(
            "UPDATE sessions SET auth_time = now(), amr = $2 "
            "WHERE id_hash = $1 AND revoked_at IS NULL AND expires_at > now()",
            id_hash,
            list(amr),
        )
        return status.endswith(" 1")

    async def revoke_session(self, id_hash: bytes) -> bool:
        return (
            await self._db.execute_count(
                "UPDATE sessions SET revoked_at = now() WHERE id_hash = $1 AND revoked_at IS NULL",
                id_hash,
            )
            == 1
        )

    async def revoke_session_by_public_id(self, user_id: UUID, public_id: UUID) -> bytes | None:
        """Revoke the user's session with this public id; return its hash, or None if none."""
        value = await self._db.fetchval(
            "UPDATE sessions SET revoked_at = now() "
            "WHERE public_id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING id_hash",
            public_id,
            user_id,
        )
        return None if value is None else bytes(value)

    async def revoke_user_sessions(
        self, user_id: UUID, *, keep: bytes | None = None
    ) -> list[bytes]:
        """Revoke every live session of the user except `keep`; return their hashes."""
        rows = await self._db.fetch(
            "UPDATE sessions SET revoked_at = now() "
            "WHERE user_id = $1 AND revoked_at IS NULL AND id_hash IS DISTINCT FROM $2 "
            "RETURNING id_hash",
            user_id,
            keep,
        )
        return [bytes(row["id_hash"]) for row in rows]

    async def delete_expired(self, cutoff: datetime) -> int:
        """Delete sessions whose absolute lifetime ended before `cutoff`; return how many."""
        return await self._db.delete_in_batches(
            _EXPIRED_LOCK,
            "DELETE FROM sessions WHERE id_hash IN ("
            "SELECT id_hash FROM sessions WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
            cutoff,
            batch=_EXPIRED_BATCH,
        )
