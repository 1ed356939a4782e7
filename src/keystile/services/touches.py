"""Touches: a record's last use, written to PostgreSQL at most once per interval.

Sessions (`last_seen_at`) and API keys (`last_used_at`) note when they were last used.
A touch is bookkeeping, never a reason to fail a request: while PostgreSQL is down it
waits (and is not retried on every request meanwhile), and the cached copy it makes
stale keeps its outage copy, so an outage that starts right after a touch still finds
the record (S31).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from keystile.errors import DependencyUnavailable
from keystile.stores.cache import TieredCache

__all__ = ["Touches"]


class Touches:
    """Write touches through `write`, then drop the cached copy of what was touched."""

    def __init__(self, cache: TieredCache[Any], *, pause: float = 5.0) -> None:
        self._cache = cache
        self._pause = pause
        self._paused_until = 0.0

    async def touch(self, key: str, write: Callable[[], Awaitable[object]]) -> None:
        """Run `write` (the UPDATE) unless touches pause; on success invalidate `key`.

        Only the last use moved, so the outage copy stays; PostgreSQL being down pauses
        touches for a few seconds instead of failing the request.
        """
        if time.monotonic() < self._paused_until:
            return
        try:
            await write()
        except DependencyUnavailable:
            self._paused_until = time.monotonic() + self._pause
        else:
            await self._cache.invalidate(key, outage_copy="keep")
