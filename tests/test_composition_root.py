"""The composition root: whatever it opened, it closes, also when startup fails half-way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis

from keystile.bootstrap import open_services
from keystile.container import Services
from keystile.embedded import EmbeddedRedis
from tests.support.backing import Backing, make_settings

_OUR_LOOPS = {"invalidation", "keyring", "housekeeping", "pool-sampler"}


class BrokenProvider:
    """An extension whose build fails after the core services exist."""

    def __init__(self) -> None:
        self.core: Services | None = None

    @asynccontextmanager
    async def build(self, core: Services) -> AsyncIterator[object]:
        self.core = core
        raise RuntimeError("extension failed to start")
        yield  # pragma: no cover


def _our_tasks() -> set[str]:
    return {task.get_name() for task in asyncio.all_tasks()} & _OUR_LOOPS


async def _client_count(url: str) -> int:
    async with Redis.from_url(url) as admin:
        clients = await admin.client_list()
    return len(clients) - 1  # less the one asking


async def test_a_failure_half_way_closes_everything_already_opened(
    backing: Backing, tmp_path: Path
) -> None:
    redis = EmbeddedRedis(tmp_path, persist=False)
    url = redis.start()
    try:
        settings = make_settings(backing, redis_url=url, housekeeping_interval_seconds=3600)
        broken = BrokenProvider()
        with pytest.raises(RuntimeError, match="extension failed to start"):
            async with open_services(settings, providers=[broken]):
                pytest.fail("services were yielded despite the failure")
        core = broken.core
        assert core is not None, "the failure was not half-way: nothing was built"
        assert core.database.pool.is_closing()
        assert _our_tasks() == set()
        assert await _client_count(url) == 0
        with pytest.raises(RuntimeError, match="shutdown"):  # its threads were stopped
            await core.hasher.hash("a password that will never be hashed")
    finally:
        redis.stop()


async def test_a_clean_shutdown_closes_everything(backing: Backing, tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path, persist=False)
    url = redis.start()
    try:
        settings = make_settings(backing, redis_url=url, housekeeping_interval_seconds=3600)
        async with open_services(settings) as services:
            await asyncio.wait_for(services.caches.ready.wait(), timeout=5)
            assert _our_tasks() == _OUR_LOOPS
            assert await _client_count(url) >= 1  # at least the invalidation listener
        assert services.database.pool.is_closing()
        assert _our_tasks() == set()
        assert await _client_count(url) == 0
    finally:
        redis.stop()


async def test_a_missing_database_url_fails_before_anything_is_opened(backing: Backing) -> None:
    settings = make_settings(backing).model_copy(
        update={"database": make_settings(backing).database.model_copy(update={"url": None})}
    )
    with pytest.raises(ValueError, match="database_url"):
        async with open_services(settings):
            pytest.fail("served without a database")
    assert _our_tasks() == set()
