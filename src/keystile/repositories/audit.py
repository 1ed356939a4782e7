"""The audit log in PostgreSQL. Never holds passwords, tokens or session ids."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from keystile.errors import DependencyUnavailable
from keystile.repositories.database import Database

__all__ = ["AuditEvent", "AuditLog", "AuditRepository", "PostgresAuditLog"]

# One pruning batch: small enough to hold row locks only briefly.
_PRUNE_BATCH = 5000
# Any constant shared by every worker: only one of them prunes at a time.
_PRUNE_LOCK = 0x6B657973_61756474  # "keysaudt"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One recorded event, with the email of its user when it still exists."""

    id: int
    at: datetime
    kind: str
    user_id: UUID | None
    email: str | None
    ip: str
    user_agent: str
    detail: dict[str, Any]


_log = logging.getLogger(__name__)


class AuditLog(Protocol):
    """Where services record security events."""

    async def record(
        self,
        kind: str,
        *,
        user_id: UUID | None = None,
        ip: str = "",
        user_agent: str = "",
        **detail: Any,
    ) -> None: ...


class AuditRepository(AuditLog, Protocol):
    """The audit log as operators read and prune it."""

    async def select_recent(self, limit: int, user_id: UUID | None = None) -> list[AuditEvent]: ...
    async def delete_older_than(self, cutoff: datetime) -> int: ...


class PostgresAuditLog:
    """Append audit events; a failed write is logged, never fatal to the request."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def record(
        self,
        kind: str,
        *,
        user_id: UUID | None = None,
        ip: str = "",
        user_agent: str = "",
        **detail: Any,
    ) -> None:
        try:
            await self._db.execute(
                "INSERT INTO audit_events (kind, user_id, ip, user_agent, detail) "
                "VALUES ($1, $2, $3, $4, $5::jsonb)",
                kind,
                user_id,
                ip[:64],
                user_agent[:256],
                json.dumps(detail),
            )
        except DependencyUnavailable:
            _log.warning("audit event dropped: postgresql unavailable", extra={"kind": kind})

    async def select_recent(self, limit: int, user_id: UUID | None = None) -> list[AuditEvent]:
        """Return the newest `limit` events, newest first, optionally of one user only."""
        # Two statements, so each is served by its own index (at / user_id, at).
        select = (
            "SELECT e.id, e.at, e.kind, e.user_id, u.email, e.ip, e.user_agent, e.detail "
            "FROM audit_events e LEFT JOIN users u ON u.id = e.user_id "
        )
        if user_id is None:
            rows = await self._db.fetch(select + "ORDER BY e.at DESC LIMIT $1", limit)
        else:
            rows = await self._db.fetch(
                select + "WHERE e.user_id = $2 ORDER BY e.at DESC LIMIT $1", limit, user_id
            )
        return [AuditEvent(**{**dict(row), "detail": json.loads(row["detail"])}) for row in rows]

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Delete events recorded before `cutoff`, in batches; return how many went.

        Returns 0 at once if another worker is already pruning.
        """
        return await self._db.delete_in_batches(
            _PRUNE_LOCK,
            "DELETE FROM audit_events WHERE id IN ("
            "SELECT id FROM audit_events WHERE at < $1 ORDER BY at LIMIT $2)",
            cutoff,
            batch=_PRUNE_BATCH,
        )
