"""Delete what can no longer matter: old audit events, expired sessions and token families."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from keystile.errors import DependencyUnavailable

__all__ = ["Housekeeping", "HousekeepingJob"]

_log = logging.getLogger(__name__)

HousekeepingJob = tuple[str, Callable[[], Awaitable[int]]]


@dataclass(frozen=True, slots=True)
class Housekeeping:
    """Run named deletion jobs, now and then, on every worker.

    Each job takes its own advisory lock in PostgreSQL, so however many workers run
    this, one does the work and the others skip it; the cost stays that of one worker.
    The composition root runs `run_once` periodically (`keystile.tasks.run_every`).
    """

    jobs: tuple[HousekeepingJob, ...]

    async def run_once(self) -> dict[str, int]:
        """Run every job; return how many rows each deleted. A failure skips that job."""
        deleted: dict[str, int] = {}
        for name, job in self.jobs:
            try:
                deleted[name] = await job()
            except DependencyUnavailable:
                _log.warning("housekeeping skipped: postgresql unavailable", extra={"job": name})
            except Exception:
                _log.exception("housekeeping failed", extra={"job": name})
            else:
                if deleted[name]:
                    _log.info("housekeeping", extra={"job": name, "deleted": deleted[name]})
        return deleted
