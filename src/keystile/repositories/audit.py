"""The audit log in PostgreSQL. Never holds passwords, tokens or session ids."""

from __future__ import annotations

import json
import logging
from typing import Any
from uuid import UUID

from keystile.errors import DependencyUnavailable
from keystile.repositories.database import Database

__all__ = ["PostgresAuditLog"]

_log = logging.getLogger(__name__)


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
