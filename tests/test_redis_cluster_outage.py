"""A Redis Cluster that is down degrades like any Redis outage (S30): never a 500.

redis-py's cluster client says "no node answers" with an error of its own that is not
a `RedisError`: `RedisClusterException` ("Redis Cluster cannot be connected"), from
loading its slot map, which it does again after every connection error. The stores
must take it for Redis being away, as they take a stopped one-server Redis
(tests/test_credential_cache.py, tests/test_rate_limits.py, tests/test_token_revocation.py,
tests/test_health.py):
cookie and bearer requests, logins and refreshes answer from PostgreSQL, readiness
says 503, and once the masters are back the worker uses the cluster again (shared
limits, invalidations heard) without a restart. The same when only one master stops
(its slots served by no one, then the others refuse every command: CLUSTERDOWN), and
when a worker starts while the cluster is down (it starts, as with one server down).
A worker loads the slot map before its first request: commands sent at once on a
client without one failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from quart import Quart

from keystile.app import create_app
from keystile.bootstrap.backends import open_redis
from keystile.settings import Settings
from tests.support.backing import Backing, make_settings
from tests.support.http import (
    PASSWORD,
    Client,
    from_ip,
    register,
    services_of,
    unique_email,
    unique_ip,
)
from tests.support.tokens import bearer, refresh
from tests.support.topologies import RedisCluster

pytestmark = pytest.mark.slow

T = TypeVar("T")

# Safety nets, not timing assertions: a request that hangs fails the test, not the run.
_HANG = 30.0
_RECOVERY = 60.0


@pytest.fixture(name="cluster")
def _cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    # A cluster of the test's own: its masters are stopped.
    with RedisCluster(tmp_path / "cluster") as cluster:
        yield cluster  # type: ignore[misc]


async def _answer(request: Awaitable[T]) -> T:
    return await asyncio.wait_for(request, timeout=_HANG)


def _settings(backing: Backing, cluster: RedisCluster) -> Settings:
    # One secret key for the test's workers: their rate-limit keys must be the same.
    return make_settings(
        backing,
        redis_url=cluster.url,
        redis_pool_size=10,
        rate_limit_login_per_ip="3/minute",
        rate_limit_redis_retry_seconds=0.2,
    )


@asynccontextmanager
async def _app(settings: Settings, *, listening: bool = True) -> AsyncIterator[Quart]:
    async with create_app(settings).test_app() as started:
        if listening:
            await asyncio.wait_for(services_of(started).caches.ready.wait(), timeout=10)
        yield started  # type: ignore[misc]


async def _status(client: Client, path: str, **request: Any) -> int:
    response = await _answer(client.get(path, **request))
    assert response.status_code != 500, await response.get_data(as_text=True)
    return int(response.status_code)


async def _post(client: Client, path: str, email: str, password: str = PASSWORD) -> Any:
    """A password login (a session, or a token grant) from an address of its own: the
    per-address limit is tight here, for `_uses_the_cluster_again`."""
    body = {"email": email, "password": password}
    return await _answer(client.post(path, json=body, **from_ip(unique_ip())))


async def _signed_in(app: Quart) -> tuple[str, Client, str, str]:
    """A new account with a session cookie, an access token and a refresh token."""
    email = unique_email()
    await _answer(register(app.test_client(), email))
    cookie = app.test_client()
    signed_in = await _post(cookie, "/v1/sessions", email)
    assert signed_in.status_code == 201, await signed_in.get_data(as_text=True)
    granted = await _post(app.test_client(), "/v1/tokens", email)
    assert granted.status_code == 200, await granted.get_data(as_text=True)
    body = await granted.get_json()
    return email, cookie, body["access_token"], body["refresh_token"]


async def _answers_with_redis_down(
    app: Quart, email: str, cookie: Client, access: str, token: str
) -> str:
    """What S30 keeps working with Redis away, and readiness saying it is away.

    Returns the refresh token it was last given (`token` is rotated).
    """
    for _ in range(2):  # the second time with every circuit open
        # The in-process copies forgotten: each read asks Redis first, then PostgreSQL.
        services_of(app).caches.forget_all()
        assert await _status(cookie, "/v1/me") == 200
        services_of(app).caches.forget_all()
        assert await _status(app.test_client(), "/v1/me", headers=bearer(access)) == 200
        for password, expected in ((PASSWORD, 201), ("wrong password!", 401)):
            attempt = await _post(app.test_client(), "/v1/sessions", email, password)
            assert attempt.status_code == expected, await attempt.get_data(as_text=True)
        granted = await _post(app.test_client(), "/v1/tokens", email)
        assert granted.status_code == 200, await granted.get_data(as_text=True)
        rotated = await _answer(refresh(app.test_client(), token))
        assert rotated.status_code == 200, await rotated.get_data(as_text=True)
        token = (await rotated.get_json())["refresh_token"]
        ready = await _answer(app.test_client().get("/readyz"))
        assert ready.status_code == 503, await ready.get_data(as_text=True)
        assert (await ready.get_json())["failed"] == ["redis"]
    return token


async def _log_in_from(app: Quart, ip: str) -> int:
    body = {"email": unique_email(), "password": PASSWORD}
    attempt = await _answer(app.test_client().post("/v1/sessions", json=body, **from_ip(ip)))
    return int(attempt.status_code)


async def _uses_the_cluster_again(*apps: Quart) -> None:
    """Every worker is ready, hears invalidations and shares its limits through Redis again.

    A login limit of 3 a minute per address, five attempts taking turns on two workers
    (as tests/test_rate_limits.py does after a one-server outage): the last two are
    refused only if the workers count in Redis (per process, each has seen 3 at most).
    Tried with new addresses until the circuits have closed.
    """
    deadline = time.monotonic() + _RECOVERY
    for app in apps:
        await asyncio.wait_for(services_of(app).caches.ready.wait(), timeout=_RECOVERY)
        while await _status(app.test_client(), "/readyz") != 200:
            assert time.monotonic() < deadline, "readyz still says redis is away"
            await asyncio.sleep(0.2)
    while True:
        ip = unique_ip()
        statuses = [await _log_in_from(apps[i % len(apps)], ip) for i in range(5)]
        if statuses == [401] * 3 + [429] * 2:
            return
        assert set(statuses) <= {401, 429}, statuses
        assert time.monotonic() < deadline, f"limits still per process: {statuses}"
        await asyncio.sleep(0.3)  # past the circuits' retry interval


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    # Warnings say Redis is away and back; an error would be a request's 500 or the
    # invalidation listener failing and restarted as for a bug (as before the fix).
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def test_every_master_stopped_then_started_again(
    backing: Backing, cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with AsyncExitStack() as stack:
        settings = _settings(backing, cluster)
        first = await stack.enter_async_context(_app(settings))
        second = await stack.enter_async_context(_app(settings))
        email, cookie, access, token = await _signed_in(first)
        for node in list(cluster.servers):
            await asyncio.to_thread(cluster.stop, node)
        await _answers_with_redis_down(first, email, cookie, access, token)
        for node in list(cluster.servers):
            await asyncio.to_thread(cluster.start_again, node)
        await asyncio.to_thread(cluster.wait_until_healthy)
        await _uses_the_cluster_again(first, second)
        assert await _status(cookie, "/v1/me") == 200
    _no_errors_logged(caplog)


async def test_one_master_stopped_then_started_again(
    backing: Backing, cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    # Its slots are served by no one: commands for them find no server, and once the
    # other masters mark it failed they refuse every command (CLUSTERDOWN).
    caplog.set_level(logging.WARNING)
    async with AsyncExitStack() as stack:
        settings = _settings(backing, cluster)
        first = await stack.enter_async_context(_app(settings))
        second = await stack.enter_async_context(_app(settings))
        email, cookie, access, token = await _signed_in(first)
        stopped = cluster.servers[0]
        await asyncio.to_thread(cluster.stop, stopped)
        token = await _answers_with_redis_down(first, email, cookie, access, token)
        await asyncio.to_thread(cluster.wait_until_refusing)
        await _answers_with_redis_down(first, email, cookie, access, token)
        await asyncio.to_thread(cluster.start_again, stopped)
        await asyncio.to_thread(cluster.wait_until_healthy)
        await _uses_the_cluster_again(first, second)
    _no_errors_logged(caplog)


async def test_a_worker_starts_while_every_master_is_stopped(
    backing: Backing, cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    # As with one Redis server down at start: the worker starts and serves degraded,
    # readiness says 503, and it uses the cluster once the masters are back.
    for node in list(cluster.servers):
        cluster.stop(node)
    caplog.set_level(logging.WARNING)
    async with AsyncExitStack() as stack:
        settings = _settings(backing, cluster)
        app = await stack.enter_async_context(_app(settings, listening=False))
        assert not services_of(app).caches.ready.is_set()
        email, cookie, access, token = await _signed_in(app)
        await _answers_with_redis_down(app, email, cookie, access, token)
        for node in list(cluster.servers):
            await asyncio.to_thread(cluster.start_again, node)
        await asyncio.to_thread(cluster.wait_until_healthy)
        other = await stack.enter_async_context(_app(settings))
        await _uses_the_cluster_again(app, other)
    _no_errors_logged(caplog)


async def test_a_worker_s_first_commands_at_once_find_the_slot_map_loaded(
    backing: Backing, cluster: RedisCluster
) -> None:
    # Sent before the map was loaded, they went to one node and the others' slots were
    # redirected (MOVED); after five redirects redis-py closed every connection, failing
    # those in flight: ConnectionError, or AttributeError (a 500) on a closed writer.
    settings = make_settings(backing, redis_url=cluster.url).redis  # 48 commands at once
    keys = [f"first:{{{unique_email()}}}" for _ in range(30)]
    for _ in range(3):
        async with open_redis(settings) as redis:
            answers = await asyncio.gather(*(redis.set(key, 1) for key in keys))
        assert answers == [True] * len(keys)
