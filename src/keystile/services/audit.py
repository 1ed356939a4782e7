"""Reading and pruning the audit log (`keystile audit ...`, and a periodic prune)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime, timedelta

from keystile.errors import NotFound
from keystile.repositories.audit import AuditEvent, AuditRepository, BufferedAuditLog
from keystile.repositories.users import UserRepository

__all__ = ["AuditService"]

_log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AuditService:
    """Show recent audit events and delete those past the retention period."""

    log: AuditRepository
    users: UserRepository
    _: KW_ONLY
    retention: timedelta
    pending: BufferedAuditLog | None = None  # events written in batches; reading flushes it first
    clock: Callable[[], datetime] = _utcnow

    async def tail(self, limit: int, email: str | None = None) -> list[AuditEvent]:
        """Return the newest `limit` events, oldest first; of one account if `email` is given."""
        user_id = None
        if email is not None:
            user = await self.users.select_user_by_email(email)
            if user is None:
                raise NotFound(f"No account for {email}.")
            user_id = user.id
        await self.flush_pending()
        return list(reversed(await self.log.select_recent(limit, user_id)))

    async def flush_pending(self) -> None:
        """Write the events this worker still holds for its next batch (failed logins)."""
        if self.pending is not None:
            await self.pending.flush()

    async def prune(self, retention: timedelta | None = None) -> int:
        """Delete events older than the retention period; return how many were deleted."""
        cutoff = self.clock() - (retention or self.retention)
        return await self.log.delete_older_than(cutoff)
