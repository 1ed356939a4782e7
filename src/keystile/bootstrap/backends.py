"""The composition root's backends: the asyncpg pool, the Redis client and what sits on them.

`open_database` and `open_redis` are the contexts `build_services` enters first (so
they close last); `build_caches` starts the cross-worker cache hub's invalidation
listener, `build_purger` the purge hook for shared HTTP caches, and `_pool_sampler`
the loop that reports both pools' use to the metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from pydantic import SecretStr
from redis.asyncio import Redis

from keystile.metrics import PoolSampler
from keystile.repositories import Database, create_pool
from keystile.settings import DatabaseSettings, HttpCacheSettings, RedisSettings, SettingsError
from keystile.stores import create_redis
from keystile.stores.cache import CacheHub
from keystile.stores.purge import NoPurge, SurrogatePurger, VarnishPurger
from keystile.stores.redis import close_redis, load_slot_map
from keystile.stores.redis_batch import RedisBatch
from keystile.tasks import background, run_every

__all__ = ["build_caches", "build_purger", "open_database", "open_redis"]


def _required(url: SecretStr | None, key: str) -> str:
    if url is None:
        raise SettingsError(f"{key} (KEYSTILE_{key.upper()}): required to serve")
    return url.get_secret_value()


@asynccontextmanager
async def open_database(settings: DatabaseSettings) -> AsyncIterator[Database]:
    """Open the asyncpg pool (and the read replica's, if set) for the life of the context."""
    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(
            _database_pool(settings, _required(settings.url, "database_url"))
        )
        if settings.read_url is not None:
            replica = await stack.enter_async_context(
                _database_pool(settings, settings.read_url.get_secret_value())
            )
            database.use_replica(replica)
        yield database


@asynccontextmanager
async def _database_pool(settings: DatabaseSettings, dsn: str) -> AsyncIterator[Database]:
    pool = await create_pool(
        dsn,
        size=settings.pool_size,
        connect_timeout=settings.connect_timeout,
        statement_timeout=settings.statement_timeout,
        statement_cache_size=settings.statement_cache_size,
        pgbouncer=settings.pgbouncer,
    )
    try:
        yield Database(
            pool,
            acquire_timeout=settings.acquire_timeout,
            statement_timeout=settings.statement_timeout,
        )
    finally:
        await asyncio.wait_for(pool.close(), timeout=settings.statement_timeout)


@asynccontextmanager
async def open_redis(settings: RedisSettings) -> AsyncIterator[Redis]:
    """Return the worker's one Redis client (one connection pool) for the life of the context."""
    redis = create_redis(
        _required(settings.url, "redis_url"),
        socket_timeout=settings.socket_timeout,
        connect_timeout=settings.connect_timeout,
        max_connections=settings.pool_size,
        acquire_timeout=settings.acquire_timeout,
        cluster=settings.cluster,
    )
    try:
        # Before any request can use it: a cluster's first commands must find its map.
        await load_slot_map(redis)
        yield redis
    finally:
        await close_redis(redis)


async def build_caches(
    redis: Redis,
    stack: AsyncExitStack,
    *,
    outage_grace: float = 0.0,
    batch: RedisBatch | None = None,
) -> CacheHub:
    """Return the hub every cross-worker cache registers with, its listener running."""
    caches = CacheHub(redis, outage_grace=outage_grace, batch=batch)
    await stack.enter_async_context(background("invalidation", caches.listen))
    return caches


async def build_purger(settings: HttpCacheSettings, stack: AsyncExitStack) -> SurrogatePurger:
    """Return the purge hook for shared HTTP caches (none configured: a no-op)."""
    if not settings.purge_urls:
        return NoPurge()
    purger = VarnishPurger(settings.purge_urls, timeout=settings.purge_timeout_seconds)
    stack.push_async_callback(purger.aclose)
    return purger


@asynccontextmanager
async def _pool_sampler(database: Database, redis: Redis) -> AsyncIterator[None]:
    sampler = PoolSampler(database.pool, redis)
    sampler.sample()
    async with background("pool-sampler", lambda: run_every(1.0, sampler.sample, name="pool")):
        yield
