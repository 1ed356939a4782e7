"""The audit log in PostgreSQL. Never holds passwords, tokens or session ids."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from keystile.errors import DependencyUnavailable
from keystile.repositories.database import PostgresRepository

__all__ = [
    "AuditEntry",
    "AuditEvent",
    "AuditLog",
    "AuditRepository",
    "BufferedAuditLog",
    "LoginRecord",
    "PostgresAuditLog",
    "audit_insert_sql",
]

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


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """An event to record in the same statement as the change it describes."""

    kind: str
    user_id: UUID | None = None
    ip: str = ""
    user_agent: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None  # when it happened, if it is written later (batches)

    def values(self) -> tuple[str, UUID | None, str, str, str]:
        """Return the row's values in `audit_insert_sql` order, truncated as stored."""
        return (
            self.kind,
            self.user_id,
            self.ip[:64],
            self.user_agent[:256],
            json.dumps(self.detail),
        )


def audit_insert_sql(first: int, rows: int = 1) -> str:
    """Return an INSERT of `rows` audit rows from parameters $first .. $first+5*rows-1.

    For a data-modifying CTE, so a change and its audit events commit in one statement.
    The parameters are each row's `AuditEntry.values`, one row after another.
    """
    rows_sql = ", ".join(_audit_row_sql(first + 5 * row) for row in range(rows))
    return f"INSERT INTO audit_events (kind, user_id, ip, user_agent, detail) VALUES {rows_sql}"


def _audit_row_sql(first: int) -> str:
    p = [f"${first + i}" for i in range(5)]
    return f"({p[0]}, {p[1]}::uuid, {p[2]}, {p[3]}, {p[4]}::jsonb)"


@dataclass(frozen=True, slots=True)
class LoginRecord:
    """How a session or token family began, stored with it in one statement.

    `amr` is what the user proved (RFC 8176: pwd, otp, hwk); `events`, the audit events
    committed in the same statement as the row they describe, in order (a second
    factor's `mfa_succeeded`, then the `login`).
    """

    amr: tuple[str, ...] = ("pwd",)
    events: tuple[AuditEntry, ...] = ()

    def audit_cte(self, first: int) -> tuple[str, tuple[object, ...]]:
        """Return `, audit AS (...)` to append to a WITH clause, with its parameters
        numbered from $first; or nothing, without events."""
        if not self.events:
            return "", ()
        values = tuple(value for event in self.events for value in event.values())
        return f", audit AS ({audit_insert_sql(first, len(self.events))})", values


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


class PostgresAuditLog(PostgresRepository):
    """Append audit events; a failed write is logged, never fatal to the request."""

    async def record(
        self,
        kind: str,
        *,
        user_id: UUID | None = None,
        ip: str = "",
        user_agent: str = "",
        **detail: Any,
    ) -> None:
        entry = AuditEntry(kind, user_id, ip, user_agent, detail)
        try:
            await self._db.execute(audit_insert_sql(1), *entry.values())
        except DependencyUnavailable:
            _log.warning("audit event dropped: postgresql unavailable", extra={"kind": kind})

    async def record_many(self, entries: Sequence[AuditEntry]) -> None:
        """Append several events in one statement; a failure is logged, never raised."""
        if not entries:
            return
        columns = list(zip(*(entry.values() for entry in entries), strict=True))
        happened = [entry.at for entry in entries]
        try:
            await self._db.execute(
                "INSERT INTO audit_events (kind, user_id, ip, user_agent, detail, at) "
                "SELECT kind, user_id, ip, user_agent, detail::jsonb, coalesce(at, now()) "
                "FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], "
                "$6::timestamptz[]) AS e(kind, user_id, ip, user_agent, detail, at)",
                *(list(column) for column in columns),
                happened,
            )
        except DependencyUnavailable:
            _log.warning(
                "audit events dropped: postgresql unavailable", extra={"count": len(entries)}
            )

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


class BufferedAuditLog:
    """Events that need not commit with anything else, written in batches.

    Failed logins write nothing but their audit event; writing each on its own would
    be one PostgreSQL round trip per failure during a guessing storm. They are kept
    here and flushed in one statement every `interval` seconds (and on `close`, which
    the composition root calls on shutdown, SIGTERM included). A SIGKILL can lose at
    most the last `interval` of these events; successful logins never wait here, their
    event commits with their session or token family.
    """

    def __init__(self, log: PostgresAuditLog, *, interval: float = 0.1, limit: int = 1000) -> None:
        self._log = log
        self._interval = interval
        self._limit = limit
        self._pending: list[AuditEntry] = []
        self._task: asyncio.Task[None] | None = None
        # One flush at a time: a caller that flushes must find every earlier event written,
        # including a batch another flush has taken but not finished writing.
        self._writing = asyncio.Lock()

    def record_later(
        self,
        kind: str,
        *,
        user_id: UUID | None = None,
        ip: str = "",
        user_agent: str = "",
        **detail: Any,
    ) -> None:
        """Queue one event; it reaches PostgreSQL within `interval` seconds."""
        self._pending.append(
            AuditEntry(kind, user_id, ip, user_agent, detail, at=datetime.now(UTC))
        )
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._interval)
        await self.flush()

    async def flush(self) -> None:
        """Write every queued event now (and wait for a batch being written)."""
        async with self._writing:
            while self._pending:
                batch, self._pending = self._pending[: self._limit], self._pending[self._limit :]
                await self._log.record_many(batch)

    async def close(self) -> None:
        """Write what is queued (at most one `interval` later) and stop."""
        if self._task is not None:
            # Not cancelled: it may be half-way through writing a batch it took.
            await self._task
        await self.flush()
