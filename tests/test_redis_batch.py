"""A login's deferrable Redis writes go out together, in one pipelined round trip."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from keystile.embedded import free_port
from keystile.stores import create_redis
from keystile.stores.rate_limits import FallbackCounterStore, MemoryCounterStore, RedisCounterStore
from keystile.stores.redis import REDIS_FAILURES
from keystile.stores.redis_batch import RedisBatch
from tests.support.backing import Backing
from tests.support.round_trips import round_trips


def _key() -> str:
    return f"keystile-test:batch:{uuid.uuid4().hex}"


@pytest.fixture(name="redis")
async def _redis(backing: Backing) -> AsyncIterator[Redis]:
    client = create_redis(
        backing.redis_url,
        socket_timeout=0.5,
        connect_timeout=0.5,
        max_connections=5,
        acquire_timeout=1,
    )
    yield client
    await client.aclose()


@pytest.fixture(name="gone")
async def _gone() -> AsyncIterator[Redis]:
    # Nothing listens on this port: every command fails to connect.
    client = create_redis(
        f"redis://127.0.0.1:{free_port()}/0",
        socket_timeout=0.3,
        connect_timeout=0.3,
        max_connections=5,
        acquire_timeout=1,
    )
    yield client
    await client.aclose()


async def test_writes_made_in_a_block_are_sent_once_when_it_ends(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = RedisBatch(redis)
    store = RedisCounterStore(redis, batch=batch)
    first, second, failures = _key(), _key(), _key()
    await redis.set(failures, b"3")
    with round_trips(monkeypatch) as sent:
        async with batch.collecting():
            await store.mark(first, 60)
            await store.mark(second, 60)
            await store.forget([failures])
            assert sent == []  # nothing sent yet
    assert sent == [["SET", "SET", "DEL"]]
    assert await redis.exists(first, second) == 2
    assert await redis.exists(failures) == 0


async def test_a_question_takes_the_queued_writes_with_it_and_gets_only_its_answers(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = RedisBatch(redis)
    store = RedisCounterStore(redis, batch=batch)
    known, seen = _key(), _key()
    await redis.set(seen, b"1")
    with round_trips(monkeypatch) as sent:
        async with batch.collecting():
            await store.mark(known, 60)
            assert await store.mark_new([_key(), seen], 60) == [True, False]
    assert sent == [["SET", "SET", "SET"]]  # the mark, then the two questions: one write
    assert await redis.exists(known) == 1


async def test_outside_a_block_each_write_goes_at_once(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = RedisBatch(redis)
    store = RedisCounterStore(redis, batch=batch)
    mark = _key()
    with round_trips(monkeypatch) as sent:
        await store.mark(mark, 60)
    assert sent == [["SET"]]
    assert await redis.exists(mark) == 1


async def test_a_block_that_raises_drops_what_it_queued(redis: Redis) -> None:
    batch = RedisBatch(redis)
    store = RedisCounterStore(redis, batch=batch)
    mark = _key()

    async def fails_after_marking() -> None:
        async with batch.collecting():
            await store.mark(mark, 60)
            raise LookupError

    with pytest.raises(LookupError):
        await fails_after_marking()
    assert await redis.exists(mark) == 0


async def test_a_failed_batch_never_fails_the_block_and_the_marks_hold_in_process(
    gone: Redis,
) -> None:
    batch = RedisBatch(gone, retry_interval=60)
    local = MemoryCounterStore()
    store = FallbackCounterStore(RedisCounterStore(gone, batch=batch), local, retry_interval=60)
    mark = _key()
    async with batch.collecting():
        await store.mark(mark, 60)
    assert await local.is_marked(mark)
    # Redis is now left alone: nothing more is deferred, each store takes its own path.
    async with batch.collecting():
        assert not batch.defer(lambda pipe: pipe.set(_key(), b"1"))


async def test_a_failed_question_raises_for_its_caller(gone: Redis) -> None:
    batch = RedisBatch(gone)
    async with batch.collecting():
        batch.defer(lambda pipe: pipe.set(_key(), b"1"))
        with pytest.raises(REDIS_FAILURES):
            await batch.send_with(lambda pipe: pipe.get(_key()))
