"""The aiocache side of the credential cache: a Redis cache and a fail-soft `cached`.

`create_credential_store` returns aiocache's `RedisCache` on the worker's one Redis
connection pool (aiocache's public `connection_pool_class` hook hands it the shared
pool), so it has keystile's deadlines and opens no connections of its own; the
pool closes with the shared client, so the store itself is never closed. Those
deadlines are the client's socket and connect timeouts (S29): aiocache's own timeout
is off, since it would run every call in a task of its own under `asyncio.wait_for`.

`OptionalCached` caches a coroutine function's results in such a store, like
aiocache's `cached`, but treats the store as optional: Redis trouble goes through a
`Circuit` (a miss, one warning, Redis left alone for `retry_interval`), and nothing
about the values is ever logged. With a `RedisBatch`, a write made inside the batch's
block joins its one round trip, with the store's own key and serializer (a login's
success writes, `stores.redis_batch`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiocache import RedisCache
from aiocache.base import BaseCache
from aiocache.serializers import StringSerializer
from redis.asyncio import ConnectionPool, Redis

from keystile.stores.circuit import Circuit, nothing
from keystile.stores.redis import is_cluster
from keystile.stores.redis_batch import RedisBatch

__all__ = ["OptionalCached", "create_credential_store"]

_log = logging.getLogger(__name__)


def create_credential_store(redis: Redis, *, namespace: str) -> BaseCache:
    """Return an aiocache `RedisCache` that uses `redis`'s connection pool.

    A Redis Cluster client has no single pool: the cache then talks through the
    cluster client itself (aiocache calls only GET, SET, DEL ... on its `client`).
    """
    if is_cluster(redis):
        store = RedisCache(serializer=StringSerializer(), namespace=namespace, timeout=None)
        store.client = redis
        return store

    def shared_pool(**_aiocache_defaults: Any) -> ConnectionPool:
        return redis.connection_pool

    return RedisCache(
        serializer=StringSerializer(),
        namespace=namespace,
        timeout=None,
        connection_pool_class=shared_pool,
    )


class OptionalCached:
    """Cache results of a coroutine function in an aiocache cache that may be down.

    Keys come from `key_builder(f, *args, **kwargs)`; results for which
    `skip_cache_func` is true are not stored. The wrapper takes aiocache's
    `cache_read=False` and `cache_write=False` keyword arguments.
    """

    def __init__(
        self,
        store: BaseCache,
        *,
        ttl: float,
        key_builder: Callable[..., str],
        skip_cache_func: Callable[[Any], bool],
        retry_interval: float = 1.0,
        batch: RedisBatch | None = None,
    ) -> None:
        """`batch` may only be given for a `RedisCache` on the batch's Redis client."""
        self.cache = store
        self.ttl = ttl
        self._batch = batch
        self._key_builder = key_builder
        self._skip = skip_cache_func
        self._circuit = Circuit(
            "credential cache",
            retry_interval=retry_interval,
            meanwhile="logins take the slow path",
            log=_log,
        )

    @property
    def available(self) -> bool:
        """False while cache use is paused after a Redis failure."""
        return self._circuit.available

    def __call__(self, f: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(f)
        async def wrapper(
            *args: Any, cache_read: bool = True, cache_write: bool = True, **kwargs: Any
        ) -> Any:
            key = self._key_builder(f, *args, **kwargs)
            if cache_read:
                found = await self._circuit.call(lambda: self.cache.get(key), nothing)
                if found is not None:
                    return found
            result = await f(*args, **kwargs)
            if cache_write and not self._skip(result) and not self._deferred(key, result):
                await self._circuit.call(lambda: self.cache.set(key, result, ttl=self.ttl), nothing)
            return result

        wrapper.cache = self.cache  # type: ignore[attr-defined]
        return wrapper

    def _deferred(self, key: str, value: Any) -> bool:
        # What aiocache's RedisCache.set would send, queued in the open batch instead.
        if self._batch is None or not self._circuit.available:
            return False
        name = self.cache.build_key(key)
        data = self.cache.serializer.dumps(value)
        px = max(1, int(self.ttl * 1000))
        return self._batch.defer(lambda pipe: pipe.psetex(name, px, data))
