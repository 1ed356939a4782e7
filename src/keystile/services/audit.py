"""Reading and pruning the audit log (`keystile audit ...`, and a periodic prune)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from keystile.errors import NotFound
from keystile.repositories.audit import AuditEvent, AuditRepository, BufferedAuditLog
from keystile.repositories.users import UserRepository

__all__ = ["AuditService"]

_log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AuditService:
    """Show recent audit events and delete those past the retention period."""

    def __init__(
        self,
        log: AuditRepository,
        users: UserRepository,
        *,
        retention: timedelta,
        pending: BufferedAuditLog | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """`pending` holds events written in batches; reading flushes it first."""
        self._log = log
        self._pending = pending
        self._users = users
        self._retention = retention
        self._clock = clock

    async def tail(self, limit: int, email: str | None = None) -> list[AuditEvent]:
        """Return the newest `limit` events, oldest first; of one account if `email` is given."""
        user_id = None
        if email is not None:
            user = await self._users.select_user_by_email(email)
            if user is None:
                raise NotFound(f"No account for {email}.")
            user_id = user.id
        await self.flush_pending()
        return list(reversed(await self._log.select_recent(limit, user_id)))

    async def flush_pending(self) -> None:
        """Write the events this worker still holds for its next batch (failed logins)."""
        if self._pending is not None:
            await self._pending.flush()

    async def prune(self, retention: timedelta | None = None) -> int:
        """Delete events older than the retention period; return how many were deleted."""
        cutoff = self._clock() - (retention or self._retention)
        return await self._log.delete_older_than(cutoff)
