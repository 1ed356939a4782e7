"""The GCRA and backoff arithmetic, in Redis and in process, and the fallback between them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from keystile.embedded import free_port
from keystile.stores import create_redis
from keystile.stores.rate_limits import (
    Backoff,
    CounterStore,
    FallbackCounterStore,
    MemoryCounterStore,
    Rate,
    RedisCounterStore,
)
from tests.support.backing import Backing


def _client(url: str) -> Redis:
    return create_redis(
        url, socket_timeout=0.5, connect_timeout=0.5, max_connections=20, acquire_timeout=1
    )


@pytest.fixture(name="store", params=["redis", "memory"])
async def _store(request: pytest.FixtureRequest, backing: Backing) -> AsyncIterator[CounterStore]:
    if request.param == "memory":
        yield MemoryCounterStore()
        return
    redis = _client(backing.redis_url)
    yield RedisCounterStore(redis)
    await redis.aclose()


def key() -> str:
    return f"test:{uuid.uuid4().hex}"


async def test_gcra_allows_a_burst_then_one_per_interval(store: CounterStore) -> None:
    rate, k = Rate(count=3, period=3.0), key()
    results = [await store.gcra([k], [rate]) for _ in range(4)]
    assert [r[0].allowed for r in results] == [True, True, True, False]
    assert [r[0].remaining for r in results[:3]] == [2, 1, 0]
    assert 0.9 <= results[3][0].retry_after <= 1.0
    assert 2.9 <= results[3][0].reset_after <= 3.0


async def test_gcra_charges_all_keys_or_none(store: CounterStore) -> None:
    tight, loose = key(), key()
    rates = [Rate(count=1, period=60), Rate(count=5, period=60)]
    first = await store.gcra([tight, loose], rates)
    refused = await store.gcra([tight, loose], rates)
    assert all(r.allowed for r in first)
    assert not any(r.allowed for r in refused)
    assert refused[0].retry_after > 0
    assert refused[1].retry_after == 0  # not this limit's doing ...
    # ... and it was not charged for the refused request: 5 - 1 - 1 = 3 left.
    assert (await store.gcra([loose], rates[1:]))[0].remaining == 3


async def test_backoff_doubles_after_the_free_failures_up_to_the_maximum(
    store: CounterStore,
) -> None:
    backoff = Backoff(free_failures=2, base_delay=1.0, max_delay=4.0, window=60)
    k = key()
    delays = [(await store.backoff_fail([(k, backoff)]))[0].delay for _ in range(6)]
    assert delays == [0, 0, 1, 2, 4, 4]
    assert 3.5 <= await store.backoff_wait([key(), k]) <= 4.0
    await store.forget([k])
    assert await store.backoff_wait([k]) == 0
    assert (await store.backoff_fail([(k, backoff)]))[0].failures == 1


async def test_marks_expire(store: CounterStore) -> None:
    k = key()
    assert not await store.is_marked(k)
    await store.mark(k, 0.2)
    assert await store.is_marked(k)
    await asyncio.sleep(0.3)
    assert not await store.is_marked(k)


async def test_mark_new_says_which_marks_are_new_and_renews_the_old_ones(
    store: CounterStore,
) -> None:
    seen, fresh = key(), key()
    assert await store.mark_new([seen], 0.4) == [True]
    await asyncio.sleep(0.25)
    assert await store.mark_new([fresh, seen], 0.4) == [True, False]
    await asyncio.sleep(0.25)  # past the first lifetime: only the renewal keeps it
    assert await store.is_marked(seen)
    assert await store.mark_new([seen, fresh], 0.4) == [False, False]


async def test_concurrent_workers_never_both_take_the_last_slot(backing: Backing) -> None:
    # S27: the check and the charge are one atomic script, shared by every client.
    clients = [_client(backing.redis_url) for _ in range(4)]
    stores = [RedisCounterStore(redis) for redis in clients]
    rate, k = Rate(count=10, period=60), key()
    try:
        results = await asyncio.gather(*(stores[i % 4].gcra([k], [rate]) for i in range(60)))
    finally:
        for redis in clients:
            await redis.aclose()
    assert sum(result[0].allowed for result in results) == 10


async def test_fallback_counts_in_process_and_says_so_when_redis_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unreachable = _client(f"redis://127.0.0.1:{free_port()}/0")
    store = FallbackCounterStore(
        RedisCounterStore(unreachable), MemoryCounterStore(), retry_interval=60
    )
    rate, k = Rate(count=2, period=60), key()
    try:
        with caplog.at_level(logging.WARNING, logger="keystile.stores.rate_limits"):
            allowed = [(await store.gcra([k], [rate]))[0].allowed for _ in range(3)]
    finally:
        await unreachable.aclose()
    assert allowed == [True, True, False]  # never fails open
    assert store.degraded
    warnings = [r for r in caplog.records if "per process" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not once per request
