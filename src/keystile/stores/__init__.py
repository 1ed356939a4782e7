"""Redis-backed stores: the shared client, caches, counters and invalidation."""

from keystile.stores.redis import create_redis, ping_redis

__all__ = ["create_redis", "ping_redis"]
