"""A worker's Redis pool under more concurrent requests than it has connections."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from keystile.app import create_app
from keystile.embedded import EmbeddedRedis
from keystile.stores import create_redis
from tests.support.backing import Backing, make_settings
from tests.support.http import logins_at_once
from tests.support.pools import commands_wait_for_a_connection, waits_end_at_the_acquire_timeout


async def test_commands_beyond_the_pool_wait_for_a_connection_instead_of_failing(
    backing: Backing,
) -> None:
    # S29: two connections; fifty commands and twenty pipelines at once wait their turn.
    redis = create_redis(
        backing.redis_url,
        socket_timeout=1,
        connect_timeout=1,
        max_connections=2,
        acquire_timeout=5,
    )
    try:
        await commands_wait_for_a_connection(redis)
    finally:
        await redis.aclose()


async def test_a_command_that_waits_past_the_acquire_timeout_fails_like_an_outage(
    backing: Backing,
) -> None:
    # S29: the wait is bounded: past `acquire_timeout`, the command fails with an error
    # the stores already treat as Redis being away.
    redis = create_redis(
        backing.redis_url,
        socket_timeout=2,
        connect_timeout=1,
        max_connections=1,
        acquire_timeout=0.1,
    )
    try:
        await waits_end_at_the_acquire_timeout(redis)
    finally:
        await redis.aclose()


async def test_connections_a_restarted_redis_closed_are_replaced_before_a_command_uses_them(
    tmp_path: Path,
) -> None:
    # S30: a Redis restart closes every pooled connection. Each must be noticed when it
    # is taken from the pool and opened again, not handed to a command that then fails
    # (which the stores would take for an outage: fallbacks, and 503s where there are none).
    server = EmbeddedRedis(tmp_path, persist=False)
    redis = create_redis(
        server.start(), socket_timeout=2, connect_timeout=2, max_connections=8, acquire_timeout=2
    )
    try:
        # Eight connections in the pool, all idle.
        await asyncio.gather(*(redis.blpop(["nothing"], timeout=0.1) for _ in range(8)))
        # Restarted on the same port while the worker's event loop runs (it reads the closes).
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        answers = await asyncio.gather(
            *(redis.set(f"after-restart-{n}", n) for n in range(8)), return_exceptions=True
        )
        assert [answer for answer in answers if isinstance(answer, BaseException)] == []
    finally:
        await redis.aclose()
        server.stop()


async def test_a_burst_of_logins_larger_than_the_redis_pool_keeps_every_check_shared(
    backing: Backing, caplog: pytest.LogCaptureFixture
) -> None:
    # S5, S27: one Redis connection for commands (the listener holds the other) and
    # twelve logins at once. They queue for the connection; none finds "Redis
    # unavailable", which would move the rate limits to per-process counts and the
    # caches to PostgreSQL mid-burst.
    app = create_app(make_settings(backing, redis_pool_size=2))
    async with app.test_app() as test_app:
        with caplog.at_level(logging.WARNING):
            statuses = await logins_at_once(test_app, 12)
    assert statuses == [200] * 12
    unavailable = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert unavailable == []
