"""The aiocache side of the credential cache: a Redis cache and a fail-soft `cached`.

aiocache's `RedisCache` builds its own redis.asyncio pool; `create_credential_store`
gives it keystile's Redis URL and deadlines (connect, socket, per-operation), and no
retries, so a Redis that is away costs at most one deadline. `OptionalCached` is
aiocache's `cached` decorator bound to a cache built by the composition root; it
treats the cache as optional: a Redis error is a miss, and after one it leaves Redis
alone for `retry_interval` so a Redis outage does not add a deadline to every login.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from aiocache import RedisCache, cached
from aiocache.base import BaseCache
from aiocache.serializers import StringSerializer
from redis.asyncio import ConnectionPool
from redis.backoff import NoBackoff
from redis.retry import Retry

from keystile.stores.redis import REDIS_FAILURES

__all__ = ["OptionalCached", "close_store", "create_credential_store"]

_log = logging.getLogger(__name__)


def create_credential_store(
    url: str,
    *,
    namespace: str,
    socket_timeout: float,
    connect_timeout: float,
    max_connections: int,
) -> BaseCache:
    """Return an aiocache `RedisCache` on keystile's Redis, with keystile's deadlines."""

    def pool_from_url(**_aiocache_defaults: Any) -> ConnectionPool:
        # aiocache passes host/port/db/password; the URL says all of that and more
        # (username, TLS with rediss://, unix sockets), so build the pool from it.
        return ConnectionPool.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            max_connections=max_connections,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )

    return RedisCache(
        serializer=StringSerializer(),
        namespace=namespace,
        timeout=socket_timeout,
        connection_pool_class=pool_from_url,
    )


async def close_store(store: BaseCache) -> None:
    """Close a store made by `create_credential_store` (or any aiocache cache)."""
    client = getattr(store, "client", None)
    if client is not None:
        # redis-py deprecates close(), which aiocache 0.12 calls: close the client ourselves.
        await client.aclose()
    else:
        await store.close()


class OptionalCached(cached):  # type: ignore[misc]
    """aiocache's `cached` over a given cache instance, where the cache may be down.

    Unlike the stock decorator (which logs every failure with a traceback and the
    value), Redis errors here are one warning, count as a miss, and pause cache use
    for `retry_interval` seconds; other errors propagate.
    """

    def __init__(
        self,
        store: BaseCache,
        *,
        ttl: float,
        key_builder: Callable[..., str],
        skip_cache_func: Callable[[Any], bool],
        retry_interval: float = 1.0,
    ) -> None:
        super().__init__(ttl=ttl, key_builder=key_builder, skip_cache_func=skip_cache_func)
        self._store = store
        self._retry_interval = retry_interval
        self._paused_until = 0.0

    def __call__(self, f: Callable[..., Any]) -> Callable[..., Any]:
        self.cache = self._store

        @functools.wraps(f)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await self.decorator(f, *args, **kwargs)

        wrapper.cache = self._store  # type: ignore[attr-defined]
        return wrapper

    @property
    def available(self) -> bool:
        """False while cache use is paused after a Redis failure."""
        return time.monotonic() >= self._paused_until

    async def get_from_cache(self, key: str) -> Any:
        if not self.available:
            return None
        try:
            return await self.cache.get(key)
        except REDIS_FAILURES as exc:
            self._pause(exc)
            return None

    async def set_in_cache(self, key: str, value: Any) -> None:
        if not self.available:
            return
        try:
            await self.cache.set(key, value, ttl=self.ttl)
        except REDIS_FAILURES as exc:
            self._pause(exc)

    def _pause(self, exc: BaseException) -> None:
        self._paused_until = time.monotonic() + self._retry_interval
        _log.warning(
            "credential cache unavailable; slow path for %.1f s",
            self._retry_interval,
            extra={"error": type(exc).__name__},
        )
