"""The in-process cache over Redis: invalidation reaches every worker, misses coalesce."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from keystile.embedded import EmbeddedRedis
from keystile.stores import create_redis
from keystile.stores.cache import CacheHub, LocalCache, SharedCopy, SingleFlight, TieredCache
from keystile.tasks import background
from tests.support.backing import Backing


class Worker:
    """One worker's view: its own Redis client, cache and listener."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        self.redis = create_redis(
            redis_url,
            socket_timeout=0.5,
            connect_timeout=0.5,
            max_connections=10,
            acquire_timeout=1,
        )
        self.caches = CacheHub(self.redis, retry_interval=0.1)
        self.cache: TieredCache[int] = self.caches.tiered(
            namespace, encode=int, decode=int, local_ttl=30, redis_ttl=60
        )
        self._stack = AsyncExitStack()

    async def start(self, *, restart_delay: float = 1.0) -> None:
        await self._stack.enter_async_context(
            background("invalidation", self.caches.listen, restart_delay=restart_delay)
        )
        await asyncio.wait_for(self.caches.ready.wait(), timeout=5)

    async def close(self) -> None:
        await self._stack.aclose()
        await self.redis.aclose()


@pytest.fixture(name="workers")
async def _workers(backing: Backing) -> AsyncIterator[tuple[Worker, Worker]]:
    namespace = f"test-{uuid.uuid4().hex}"
    pair = (Worker(backing.redis_url, namespace), Worker(backing.redis_url, namespace))
    for worker in pair:
        await worker.start()
    yield pair
    for worker in pair:
        await worker.close()


async def _constant(value: int) -> int:
    return value


async def test_invalidation_reaches_the_other_worker_within_a_second(
    workers: tuple[Worker, Worker],
) -> None:
    first, second = workers
    assert await first.cache.get("k", lambda: _constant(1)) == 1
    assert await second.cache.get("k", lambda: _constant(1)) == 1
    assert second.cache.local.get("k") == 1

    await first.cache.invalidate("k")
    deadline = time.monotonic() + 1.0
    while second.cache.local.get("k") is not None:
        assert time.monotonic() < deadline, "invalidation did not arrive within 1 s"
        await asyncio.sleep(0.01)
    assert await second.cache.get("k", lambda: _constant(2)) == 2


async def test_concurrent_misses_for_one_key_run_one_load(
    workers: tuple[Worker, Worker],
) -> None:
    first, _ = workers
    calls = 0

    async def slow_load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return 7

    results = await asyncio.gather(*(first.cache.get("hot", slow_load) for _ in range(20)))
    assert results == [7] * 20
    assert calls == 1


async def test_second_worker_reads_the_redis_copy_without_loading(
    workers: tuple[Worker, Worker],
) -> None:
    first, second = workers
    await first.cache.get("shared", lambda: _constant(5))

    async def must_not_load() -> int:
        raise AssertionError("loaded from the source despite a Redis copy")

    assert await second.cache.get("shared", must_not_load) == 5


async def test_a_shared_copy_read_by_another_call_is_used_not_kept(
    workers: tuple[Worker, Worker],
) -> None:
    # The login gate reads the Redis copy in its script and hands it over.
    first, second = workers
    assert await first.cache.get("k", lambda: _constant(5)) == 5
    raw = await second.redis.get(second.cache.redis_key("k"))

    async def must_not_load() -> int:
        raise AssertionError("the shared copy should have answered")

    assert await second.cache.get("k", must_not_load, shared=SharedCopy(raw)) == 5
    # Read before this worker could watch for its invalidation: not kept here.
    assert second.cache.local.get("k") is None


async def test_a_shared_copy_known_absent_or_unreadable_goes_to_the_loader(
    workers: tuple[Worker, Worker],
) -> None:
    first, _ = workers
    assert await first.cache.get("a", lambda: _constant(1), shared=SharedCopy(None)) == 1
    assert await first.redis.get(first.cache.redis_key("a")) == b"1"  # filled as usual
    assert await first.cache.get("b", lambda: _constant(2), shared=SharedCopy(b"{not")) == 2


async def test_reads_fall_back_to_the_loader_when_redis_is_down(tmp_path: Path) -> None:
    redis_server = EmbeddedRedis(tmp_path, persist=False)
    worker = Worker(redis_server.start(), "down")
    try:
        await worker.start()
        redis_server.stop()
        started = time.monotonic()
        assert await worker.cache.get("k", lambda: _constant(3)) == 3
        await worker.cache.invalidate("k")  # logged, never raised
        assert time.monotonic() - started < 2.0
    finally:
        await worker.close()
        redis_server.stop()


async def test_listener_reconnects_when_redis_returns(tmp_path: Path) -> None:
    redis_server = EmbeddedRedis(tmp_path, persist=False)
    url = redis_server.start()
    first, second = Worker(url, "back"), Worker(url, "back")
    try:
        for worker in (first, second):
            await worker.start()
        redis_server.stop()
        await asyncio.sleep(0.3)
        redis_server.start()  # same port
        await asyncio.wait_for(second.caches.ready.wait(), timeout=5)
        await second.cache.get("k", lambda: _constant(1))
        await first.cache.invalidate("k")
        deadline = time.monotonic() + 1.0
        while second.cache.local.get("k") is not None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    finally:
        for worker in (first, second):
            await worker.close()
        redis_server.stop()


async def test_a_replay_cut_short_by_shutdown_keeps_what_it_had_not_sent(tmp_path: Path) -> None:
    # The invalidations fail while Redis is down; it comes back holding the copies they
    # were meant to delete (as a promoted replica would), and the listener's replay of
    # them is stopped part-way (here by a shutdown, while writes are paused): none may be
    # lost, and the next replay deletes those copies.
    redis_server = EmbeddedRedis(tmp_path, persist=False)
    url = redis_server.start()
    # A deadline longer than the pause below: the replay waits, it does not time out.
    timeouts = {"socket_timeout": 10, "connect_timeout": 0.5, "acquire_timeout": 1}
    redis = create_redis(url, max_connections=10, **timeouts)
    admin = create_redis(url, max_connections=2, **timeouts)
    caches = CacheHub(redis, retry_interval=0.1)
    cache: TieredCache[int] = caches.tiered(
        "replayed", encode=int, decode=int, local_ttl=30, redis_ttl=60
    )
    try:
        redis_server.stop()
        await cache.invalidate("a")
        await cache.invalidate("b", outage_copy="end")
        assert cache.unpublished == {"a": "drop", "b": "end"}
        redis_server.start()  # same port
        for key in ("a", "b"):
            await admin.set(cache.redis_key(key), "1")  # the replica's stale copies

        await admin.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
        async with background("invalidation", caches.listen):
            await asyncio.sleep(0.5)  # subscribed, and replaying into the pause
            assert not caches.ready.is_set()
        assert cache.unpublished == {"a": "drop", "b": "end"}

        await admin.execute_command("CLIENT", "UNPAUSE")
        async with background("invalidation", caches.listen):
            await asyncio.wait_for(caches.ready.wait(), timeout=5)
        assert cache.unpublished == {}
        assert await admin.get(cache.redis_key("a")) is None
        assert await admin.get(cache.redis_key("b")) is None
    finally:
        await admin.aclose()
        await redis.aclose()
        redis_server.stop()


async def test_invalidations_that_fail_again_during_the_replay_stay_pending(
    tmp_path: Path,
) -> None:
    redis_server = EmbeddedRedis(tmp_path, persist=False)
    worker = Worker(redis_server.start(), "again")
    try:
        redis_server.stop()
        await worker.cache.invalidate("a", outage_copy="keep")
        await worker.cache.invalidate("a", outage_copy="end")
        await worker.cache.invalidate("b")
        await worker.caches._replay_unpublished()  # Redis still away
        assert worker.cache.unpublished == {"a": "end", "b": "drop"}
    finally:
        await worker.close()
        redis_server.stop()


async def test_a_refresh_replaces_every_copy_unless_an_invalidation_just_came(
    backing: Backing,
) -> None:
    redis = create_redis(
        backing.redis_url,
        socket_timeout=0.5,
        connect_timeout=0.5,
        max_connections=10,
        acquire_timeout=1,
    )
    caches = CacheHub(redis, outage_grace=60)
    cache: TieredCache[int] = caches.tiered(
        f"test-{uuid.uuid4().hex}",
        encode=int,
        decode=int,
        local_ttl=30,
        redis_ttl=60,
        outage_copy=True,
    )

    async def copies(key: str) -> tuple[bytes | None, bytes | None]:
        shared = await redis.get(cache.redis_key(key))
        return shared, await redis.get(cache.redis_key(key) + ":outage")

    try:
        for key in ("changed", "ended", "touched"):
            assert await cache.get(key, lambda: _constant(1)) == 1
        await cache.refresh("changed", 2)
        assert await copies("changed") == (b"2", b"2")  # the outage copy too
        assert cache.local.get("changed") is None
        assert await cache.get("changed", lambda: _constant(1)) == 2  # read from Redis

        # Invalidated moments before: perhaps of a later change than the value refreshed.
        await cache.invalidate("ended", outage_copy="end")
        await cache.refresh("ended", 2)
        assert await copies("ended") == (None, b"null")  # still ended
        await cache.invalidate("touched", outage_copy="keep")
        await cache.refresh("touched", 2)
        assert await copies("touched") == (None, None)  # dropped, neither old nor new
        assert cache.unpublished == {}
    finally:
        await redis.aclose()


class _ListenerFailures(logging.Handler):
    """Sets `logged` when `background` reports the invalidation listener failed."""

    def __init__(self) -> None:
        super().__init__()
        self.logged = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "task", None) == "invalidation" and record.exc_info:
            self.logged.set()


@pytest.fixture(name="listener_failures")
def _listener_failures() -> Iterator[_ListenerFailures]:
    handler = _ListenerFailures()
    logger = logging.getLogger("keystile.tasks")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _restarts() -> float:
    labels = {"task": "invalidation"}
    return REGISTRY.get_sample_value("keystile_background_restarts_total", labels) or 0.0


async def test_a_listener_whose_subscriber_raised_hears_later_invalidations_once_restarted(
    backing: Backing, listener_failures: _ListenerFailures
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    first, second = Worker(backing.redis_url, namespace), Worker(backing.redis_url, namespace)
    seen: list[tuple[str | None, bool]] = []  # each message, and `ready` as it arrived
    resubscribed = asyncio.Event()

    def on_rotation(key: str | None) -> None:
        seen.append((key, second.caches.ready.is_set()))
        if key == "bad":
            raise RuntimeError("a bug in a subscriber")
        if key is None and len(seen) > 1:
            resubscribed.set()

    second.caches.subscribe(f"{namespace}-rotations", on_rotation)
    restarts = _restarts()
    try:
        await first.start()
        await second.start(restart_delay=0.01)
        await first.caches.publish(f"{namespace}-rotations", "bad")
        async with asyncio.timeout(10):  # safety nets, not measurements
            await listener_failures.logged.wait()
            await resubscribed.wait()
            await second.caches.ready.wait()
        # Deaf from the failure until it subscribed again, and told its subscribers so.
        assert seen == [(None, False), ("bad", True), (None, False)]
        assert _restarts() == restarts + 1

        # A revocation sent now reaches the restarted listener.
        assert await second.cache.get("k", lambda: _constant(1)) == 1
        assert second.cache.local.get("k") == 1
        await first.cache.invalidate("k")
        deadline = time.monotonic() + 5.0
        while second.cache.local.get("k") is not None:
            assert time.monotonic() < deadline, "the restarted listener missed the invalidation"
            await asyncio.sleep(0.01)
        await first.caches.publish(f"{namespace}-rotations", "later")
        deadline = time.monotonic() + 5.0
        while ("later", True) not in seen:
            assert time.monotonic() < deadline, "the restarted listener missed the message"
            await asyncio.sleep(0.01)
    finally:
        for worker in (first, second):
            await worker.close()


async def test_a_failed_listener_is_not_ready_while_it_waits_to_restart(
    backing: Backing, listener_failures: _ListenerFailures
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    worker = Worker(backing.redis_url, namespace)

    def on_rotation(key: str | None) -> None:
        if key == "bad":
            raise RuntimeError("a bug in a subscriber")

    worker.caches.subscribe(f"{namespace}-rotations", on_rotation)
    try:
        await worker.start(restart_delay=3600)
        assert await worker.cache.get("k", lambda: _constant(1)) == 1
        await worker.caches.publish(f"{namespace}-rotations", "bad")
        async with asyncio.timeout(10):
            await listener_failures.logged.wait()
        assert not worker.caches.ready.is_set()
    finally:
        async with asyncio.timeout(10):  # shutdown does not wait out the hour's backoff
            await worker.close()


def test_local_entries_expire_after_their_ttl() -> None:
    cache: LocalCache[str, int] = LocalCache(ttl=0.05)
    cache.set("k", 1)
    assert cache.get("k") == 1
    time.sleep(0.06)
    assert cache.get("k") is None


def test_local_cache_is_bounded() -> None:
    cache: LocalCache[int, int] = LocalCache(ttl=60, max_entries=3)
    for i in range(5):
        cache.set(i, i)
    assert len(cache) == 3
    assert cache.get(0) is None
    assert cache.get(4) == 4


async def test_single_flight_shares_a_failure_with_every_waiter() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def failing() -> int:
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    results = await asyncio.gather(
        *(flight.run("k", failing) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, ValueError) for result in results)


async def test_a_load_racing_an_invalidation_does_not_cache_its_stale_result(
    workers: tuple[Worker, Worker],
) -> None:
    # The load reads the source, then the revocation commits and invalidates, then the
    # load would write back what it read: neither Redis nor the local cache may keep it.
    first, second = workers
    source = {"k": 1}
    read_done = asyncio.Event()
    release = asyncio.Event()

    async def slow_load() -> int:
        value = source["k"]
        read_done.set()
        await release.wait()
        return value

    loading = asyncio.create_task(first.cache.get("k", slow_load))
    await read_done.wait()
    source["k"] = 2
    await second.cache.invalidate("k")
    release.set()
    assert await loading == 1  # the caller that raced still gets what it read
    assert first.cache.local.get("k") is None
    assert await second.cache.get("k", lambda: _constant(source["k"])) == 2
    assert await first.cache.get("k", lambda: _constant(source["k"])) == 2
