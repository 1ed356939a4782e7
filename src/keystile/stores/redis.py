"""The shared Redis client, with deadlines on connect and on every command (S29)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from keystile.errors import DependencyUnavailable

__all__ = ["REDIS_FAILURES", "create_redis", "ping_redis"]

# What "Redis is not answering" looks like: redis-py's own errors (its connection and
# timeout errors included), socket errors, and asyncio deadlines (TimeoutError).
REDIS_FAILURES = (RedisError, OSError, TimeoutError)


def create_redis(
    url: str, *, socket_timeout: float, connect_timeout: float, max_connections: int
) -> Redis:
    """Return a pooled client that fails fast rather than retrying into the caller's deadline."""
    return Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        max_connections=max_connections,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


async def ping_redis(redis: Redis) -> None:
    """Raise `DependencyUnavailable` unless Redis answers PING."""
    try:
        await redis.ping()
    except REDIS_FAILURES as exc:
        raise DependencyUnavailable("redis") from exc
