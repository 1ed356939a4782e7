"""What a Redis client must do with more commands at once than it has connections (S29)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from keystile.stores.redis import REDIS_FAILURES
from tests.support.http import unique_email

__all__ = ["commands_wait_for_a_connection", "waits_end_at_the_acquire_timeout"]


async def commands_wait_for_a_connection(redis: Redis) -> None:
    """Fifty commands, then twenty pipelines, at once: each waits its turn, none fails."""
    keys = [f"pool-test:{{{unique_email()}}}" for _ in range(2)]
    try:
        counts = await asyncio.gather(*(redis.incr(keys[0]) for _ in range(50)))
        assert sorted(counts) == list(range(1, 51))

        async def pipelined() -> list[Any]:
            async with redis.pipeline() as pipe:
                pipe.incr(keys[0]).incr(keys[1])
                return list(await pipe.execute())

        replies = await asyncio.gather(*(pipelined() for _ in range(20)))
        assert sorted(reply[1] for reply in replies) == list(range(1, 21))
    finally:
        await redis.delete(*keys)


async def waits_end_at_the_acquire_timeout(redis: Redis) -> None:
    """With its only connection (or turn) held, a command fails like an outage, then works.

    `redis` has one connection for commands and an acquire timeout well under 0.8 s.
    """
    holding = asyncio.ensure_future(redis.blpop([f"pool-test:{unique_email()}"], timeout=1))
    await asyncio.sleep(0.2)  # the only connection now waits in BLPOP
    with pytest.raises(REDIS_FAILURES):
        await redis.get("pool-test:any")
    assert await holding is None
    assert await redis.get("pool-test:any") is None  # the connection came back
