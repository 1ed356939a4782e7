"""Session checks from the cache: no I/O in the steady state, yet idle, absolute and
touch rules hold exactly as if every check went to PostgreSQL (S9)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keystile.errors import NotAuthenticated
from keystile.repositories import Database, PostgresSessionRepository, PostgresUserRepository
from keystile.repositories.database import create_pool
from keystile.repositories.sessions import SessionRecord
from keystile.repositories.users import User
from keystile.services.sessions import SessionService, hash_session_id
from keystile.services.types import ClientInfo
from keystile.stores import create_redis
from keystile.stores.cache import CacheHub, TieredCache
from keystile.tasks import background
from tests.support.backing import Backing
from tests.support.http import unique_email

IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=2)
TOUCH = timedelta(minutes=1)


class Clock:
    """A clock the test moves by hand, starting at the real time (rows use now())."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Counting:
    """Wrap an object and count the coroutine methods called on it (not a mock: it forwards)."""

    def __init__(self, inner: Any, methods: set[str]) -> None:
        self._inner = inner
        self._methods = methods
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self._methods:
            return attribute

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await attribute(*args, **kwargs)

        return counted


@dataclass
class Parts:
    database: Database
    redis: Any
    users: PostgresUserRepository

    def worker(self, clock: Clock, *, listen: bool = True) -> Worker:
        repository = Counting(
            PostgresSessionRepository(self.database),
            {"select_session", "touch_session", "insert_session"},
        )
        redis = Counting(self.redis, {"get", "set", "delete", "publish"})
        cache: TieredCache[SessionRecord] = TieredCache(
            "session",
            redis,  # type: ignore[arg-type]
            encode=SessionRecord.to_json,
            decode=SessionRecord.from_json,
            local_ttl=60,
            redis_ttl=60,
        )
        service = SessionService(
            repository,  # type: ignore[arg-type]
            cache,
            idle_timeout=IDLE,
            absolute_lifetime=ABSOLUTE,
            touch_interval=TOUCH,
            clock=clock,
        )
        return Worker(service, cache, repository, redis)


@dataclass
class Worker:
    service: SessionService
    cache: TieredCache[SessionRecord]
    repository: Counting
    redis: Counting


@pytest.fixture(name="parts")
async def _parts(backing: Backing) -> AsyncIterator[Parts]:
    pool = await create_pool(
        backing.database_url,
        size=2,
        connect_timeout=5,
        statement_timeout=5,
        statement_cache_size=100,
    )
    redis = create_redis(
        backing.redis_url, socket_timeout=1, connect_timeout=1, max_connections=5, acquire_timeout=1
    )
    database = Database(pool, acquire_timeout=2, statement_timeout=5)
    try:
        yield Parts(database, redis, PostgresUserRepository(database))
    finally:
        await redis.aclose()
        await pool.close()


async def _user(parts: Parts) -> User:
    user = await parts.users.insert_user(unique_email(), "not-a-real-hash")
    assert user is not None
    return user


async def test_steady_state_session_check_does_no_network_round_trip(parts: Parts) -> None:
    # Hot path 3 (docs/architecture.md): the cookie check is served from process memory.
    clock = Clock()
    worker = parts.worker(clock)
    session_id = await worker.service.create(await _user(parts), ClientInfo())
    await worker.service.authenticate(session_id)  # the first check loads and caches
    worker.repository.calls.clear()
    worker.redis.calls.clear()

    for _ in range(200):
        principal = await worker.service.authenticate(session_id)
        clock.advance(timedelta(milliseconds=100))  # 20 s in all: under the touch interval
    assert principal.via == "session"
    assert worker.repository.calls == {}
    assert worker.redis.calls == {}


async def test_cached_idle_session_is_refused(parts: Parts) -> None:
    # S9: idle timeout enforced on the server even when the state comes from the cache.
    clock = Clock()
    worker = parts.worker(clock)
    session_id = await worker.service.create(await _user(parts), ClientInfo())
    await worker.service.authenticate(session_id)
    assert worker.cache.local.get(hash_session_id(session_id).hex()) is not None

    clock.advance(IDLE + timedelta(seconds=1))
    with pytest.raises(NotAuthenticated):
        await worker.service.authenticate(session_id)


async def test_last_seen_is_written_at_most_once_per_interval_and_slides_the_idle_timeout(
    parts: Parts,
) -> None:
    clock = Clock()
    worker = parts.worker(clock)
    session_id = await worker.service.create(await _user(parts), ClientInfo())

    # Three steps of 20 minutes: 60 minutes in all, twice the idle timeout, all in use.
    for _ in range(3):
        for _ in range(50):  # many requests within one interval: at most one write
            await worker.service.authenticate(session_id)
            clock.advance(timedelta(milliseconds=200))
        clock.advance(timedelta(minutes=20))
    await worker.service.authenticate(session_id)
    assert worker.repository.calls["touch_session"] == 3

    record = await PostgresSessionRepository(parts.database).select_session(
        hash_session_id(session_id)
    )
    assert record is not None
    assert clock.now - record.last_seen_at < TOUCH


async def test_absolute_lifetime_ends_a_session_in_use(parts: Parts) -> None:
    # S9: the absolute lifetime holds however active the session is.
    clock = Clock()
    worker = parts.worker(clock)
    session_id = await worker.service.create(await _user(parts), ClientInfo())
    for _ in range(5):  # 5 x 25 min = 125 min > 2 h, never idle for long
        await worker.service.authenticate(session_id)
        clock.advance(timedelta(minutes=25))
    with pytest.raises(NotAuthenticated):
        await worker.service.authenticate(session_id)


async def test_a_stale_cached_copy_never_refuses_a_session_in_use(parts: Parts) -> None:
    # Worker B misses A's invalidation (no listener): its copy says the session is idle,
    # but A saw the session in use; B asks PostgreSQL before refusing.
    clock = Clock()
    first, second = parts.worker(clock), parts.worker(clock)
    session_id = await first.service.create(await _user(parts), ClientInfo())
    await first.service.authenticate(session_id)
    await second.service.authenticate(session_id)

    clock.advance(timedelta(minutes=20))
    await first.service.authenticate(session_id)  # touches last_seen_at
    clock.advance(timedelta(minutes=15))  # 35 min after B's copy, 15 after the touch
    principal = await second.service.authenticate(session_id)
    assert principal.user_id is not None


async def test_revocation_reaches_a_listening_worker_within_a_second(parts: Parts) -> None:
    # S9: end() on one worker; another worker holding the session in cache refuses it.
    clock = Clock()
    first, second = parts.worker(clock), parts.worker(clock)
    listener = CacheHub(parts.redis, retry_interval=0.1)
    listener.register(second.cache)
    async with background("invalidation", listener.listen):
        await asyncio.wait_for(listener.ready.wait(), timeout=5)
        session_id = await first.service.create(await _user(parts), ClientInfo())
        await second.service.authenticate(session_id)
        await first.service.end(hash_session_id(session_id))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while True:
            try:
                await second.service.authenticate(session_id)
            except NotAuthenticated:
                break
            assert loop.time() < deadline, "revoked session still accepted after 1 s"
            await asyncio.sleep(0.01)
