"""Redis writes that need no answer, sent together: one pipelined round trip.

A successful cold login used to write four times, one round trip each: the user-cache
fill, the credential-cache entry, the address as a known client of the account, and
(an address new to the account) the new-device marks. Each round trip costs the event
loop more than the bytes it sends (docs/performance.md). Inside `RedisBatch.collecting()`
the stores that can wait queue their writes instead (`defer`); the queue goes out with
the next command that needs an answer (`send_with`), or when the block ends. The login
then writes once.

Only writes whose answer no one reads are deferred: cache fills and marks, none of which
decides a request. A batch that fails is logged once (a `Circuit`) and Redis is left
alone for `retry_interval`: while it is, nothing is deferred and each store takes its
own path, with its own fallback. The writes of a failed batch are lost, as they would
have been alone: a cache entry is written by the next load, and the counter store has
already kept its marks in this process (`FallbackCounterStore`). When the block raises,
what it queued is dropped with it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from redis.asyncio import Redis

from keystile.stores.circuit import Circuit

__all__ = ["Queue", "RedisBatch"]

_log = logging.getLogger(__name__)

# Adds its commands to a pipeline (redis-py's, or its cluster pipeline).
Queue = Callable[[Any], object]


class _Pending:
    """The writes one block has queued so far; closed once they have been sent."""

    __slots__ = ("open", "writes")

    def __init__(self) -> None:
        self.writes: list[Queue] = []
        self.open = True

    def take(self) -> list[Queue]:
        writes, self.writes = self.writes, []
        return writes


_PENDING: ContextVar[_Pending | None] = ContextVar("keystile_redis_batch", default=None)


class RedisBatch:
    """Collect the deferrable writes of one piece of work and send them in one pipeline."""

    def __init__(self, redis: Redis, *, retry_interval: float = 1.0) -> None:
        self._redis = redis
        self._circuit = Circuit(
            "batched writes",
            retry_interval=retry_interval,
            meanwhile="each store writes on its own",
            log=_log,
        )

    @asynccontextmanager
    async def collecting(self) -> AsyncIterator[None]:
        """Queue the deferrable writes made in this block; send them when it ends."""
        pending = _Pending()
        token = _PENDING.set(pending)
        try:
            yield
        finally:
            _PENDING.reset(token)
            pending.open = False
        writes = pending.take()
        if writes:
            await self._circuit.call(lambda: self._execute(writes, None), _nothing)

    def defer(self, write: Queue) -> bool:
        """Queue `write` in the open block and return True; False if the caller must write now.

        False outside `collecting()`, and while Redis is being left alone after a failure.
        """
        pending = _PENDING.get()
        if pending is None or not pending.open or not self._circuit.available:
            return False
        pending.writes.append(write)
        return True

    async def send_with(self, commands: Queue) -> list[Any]:
        """Send the queued writes and `commands` in one round trip; return `commands`' replies.

        Raises what the pipeline raises (`REDIS_FAILURES`), for the caller's fallback;
        the queued writes are then lost.
        """
        pending = _PENDING.get()
        writes = pending.take() if pending is not None else []
        return await self._execute(writes, commands)

    async def _execute(self, writes: list[Queue], commands: Queue | None) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for write in writes:
                write(pipe)
            queued = len(pipe)
            if commands is not None:
                commands(pipe)
            replies = await pipe.execute()
        return list(replies[queued:])


async def _nothing() -> list[Any]:
    return []
