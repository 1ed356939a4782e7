"""One way to degrade when Redis fails: skip it for a while, say so once, say when it is back.

Every store that can do without Redis (rate-limit counters fall back to this
process, caches fall back to PostgreSQL, the credential cache to the slow hash)
puts its Redis calls behind a `Circuit`. After a failure Redis is left alone for
`retry_interval` seconds, so an outage costs one deadline per interval rather than
one per request; the first failure and the recovery are each logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from keystile.stores.redis import REDIS_FAILURES

__all__ = ["Circuit"]

T = TypeVar("T")


class Circuit:
    """Call Redis while it answers; after a failure, use the fallback for `retry_interval` s."""

    def __init__(
        self,
        name: str,
        *,
        retry_interval: float,
        meanwhile: str,
        log: logging.Logger,
    ) -> None:
        """`meanwhile` says what happens while Redis is away (e.g. "limits hold per process")."""
        self._name = name
        self._retry_interval = retry_interval
        self._meanwhile = meanwhile
        self._log = log
        self._retry_at = 0.0
        self.degraded = False

    @property
    def available(self) -> bool:
        """False while Redis is being left alone after a failure."""
        return time.monotonic() >= self._retry_at

    async def call(
        self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> T:
        """Return `primary()`, or `fallback()` if it fails or Redis is being left alone."""
        if self.available:
            return await self.attempt(primary, fallback)
        return await fallback()

    async def attempt(
        self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> T:
        """Like `call`, but always try Redis: for writes that must not be skipped."""
        try:
            result = await primary()
        except REDIS_FAILURES as exc:
            self._failed(exc)
            return await fallback()
        self._succeeded()
        return result

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self._retry_interval
        if not self.degraded:
            self.degraded = True
            self._log.warning(
                "%s: redis unavailable (%s); %s",
                self._name,
                type(exc).__name__,
                self._meanwhile,
            )

    def _succeeded(self) -> None:
        if self.degraded:
            self.degraded = False
            self._log.warning("%s: redis is back", self._name)


async def nothing() -> None:
    """A fallback that does nothing."""
    return None
