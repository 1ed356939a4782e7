"""The composition root's housekeeping: one loop per worker that deletes what is kept
no longer (old audit events, long-expired sessions and token families, and the jobs
other capabilities hand it, such as settled mail).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

from keystile.repositories import PostgresRefreshTokenRepository, PostgresSessionRepository
from keystile.services.audit import AuditService
from keystile.services.housekeeping import Housekeeping, HousekeepingJob
from keystile.settings import Settings
from keystile.tasks import background, run_every

__all__ = ["build_housekeeping"]


async def build_housekeeping(
    settings: Settings,
    audit: AuditService,
    sessions: PostgresSessionRepository,
    refresh_tokens: PostgresRefreshTokenRepository,
    stack: AsyncExitStack,
    extra: Sequence[HousekeepingJob] = (),
) -> Housekeeping:
    """Return the deletion of old audit events and long-expired sessions and token families
    (and the `extra` jobs of other capabilities, such as settled mail), run every
    `housekeeping_interval_seconds` (0: never) for the life of the stack.
    """
    keep_expired = timedelta(hours=settings.retention.expired_record_hours)

    def expired_before() -> datetime:
        return datetime.now(UTC) - keep_expired

    housekeeping = Housekeeping(
        (
            ("audit_events", audit.prune),
            ("sessions", lambda: sessions.delete_expired(expired_before())),
            ("refresh_token_families", lambda: refresh_tokens.delete_expired(expired_before())),
            *extra,
        )
    )
    interval = settings.retention.housekeeping_interval_seconds
    if interval:
        # Workers started together do not all run at once.
        first = random.uniform(0, min(interval, 60.0))
        await stack.enter_async_context(
            background(
                "housekeeping",
                lambda: run_every(
                    interval, housekeeping.run_once, name="housekeeping", first_delay=first
                ),
            )
        )
    return housekeeping
