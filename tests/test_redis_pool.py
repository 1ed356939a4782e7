"""A worker's Redis pool under more concurrent requests than it has connections."""

from __future__ import annotations

import asyncio
import logging

import pytest

from keystile.app import create_app
from keystile.stores import create_redis
from keystile.stores.redis import REDIS_FAILURES
from tests.support.backing import Backing, make_settings
from tests.support.http import PASSWORD, services_of, unique_email


async def test_commands_beyond_the_pool_wait_for_a_connection_instead_of_failing(
    backing: Backing,
) -> None:
    # S29: two connections, fifty commands at once: each waits its turn for a connection.
    redis = create_redis(
        backing.redis_url,
        socket_timeout=1,
        connect_timeout=1,
        max_connections=2,
        acquire_timeout=5,
    )
    key = f"pool-test:{unique_email()}"
    try:
        counts = await asyncio.gather(*(redis.incr(key) for _ in range(50)))
        assert sorted(counts) == list(range(1, 51))
    finally:
        await redis.delete(key)
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
        holding = asyncio.ensure_future(redis.blpop([f"pool-test:{unique_email()}"], timeout=1))
        await asyncio.sleep(0.2)  # the only connection now waits in BLPOP
        with pytest.raises(REDIS_FAILURES):
            await redis.get("pool-test:any")
        assert await holding is None
    finally:
        await redis.aclose()


async def test_a_burst_of_logins_larger_than_the_redis_pool_keeps_every_check_shared(
    backing: Backing, caplog: pytest.LogCaptureFixture
) -> None:
    # S5, S27: one Redis connection for commands (the listener holds the other) and
    # twelve logins at once. They queue for the connection; none finds "Redis
    # unavailable", which would move the rate limits to per-process counts and the
    # caches to PostgreSQL mid-burst.
    app = create_app(make_settings(backing, redis_pool_size=2))
    async with app.test_app() as test_app:
        services = services_of(test_app)
        password_hash = await services.hasher.hash(PASSWORD)
        emails = [unique_email() for _ in range(12)]
        await services.users.insert_users([(email, password_hash) for email in emails])
        client = test_app.test_client()
        with caplog.at_level(logging.WARNING):
            answers = await asyncio.gather(
                *(
                    client.post("/v1/tokens", json={"email": email, "password": PASSWORD})
                    for email in emails
                )
            )
    assert [answer.status_code for answer in answers] == [200] * 12
    unavailable = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert unavailable == []
