"""Two-level caching: in-process, over Redis, over the source of truth.

Invalidations travel on one channel with plain PUBLISH. On Redis Cluster a PUBLISH is
broadcast to every node, so a listener subscribed on any node hears them all; sharded
pub/sub (SPUBLISH, Redis 7) would put the one channel on one shard and gains nothing
for a single channel, so keystile does not use it (docs/scaling.md).

The hot paths (token epochs, session state, user lookups) read from a small
in-process cache first, so a steady-state request does no network I/O. Writers
call `invalidate`, which deletes the Redis copy and publishes the key on a Redis
channel; every worker's `CacheHub` drops its local copy within
milliseconds. If a message is lost (Redis restarting, a partition), local entries
still expire after their short TTL. Concurrent misses for one key share one load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from redis.asyncio import Redis

from keystile import metrics
from keystile.errors import DependencyUnavailable
from keystile.stores.circuit import Circuit, nothing
from keystile.stores.redis import REDIS_FAILURES, is_cluster
from keystile.stores.redis_batch import RedisBatch
from keystile.tasks import stop_if_cancelled

__all__ = [
    "CacheHub",
    "LocalCache",
    "OutageCopy",
    "SharedCopy",
    "SingleFlight",
    "TieredCache",
    "publish",
]

_log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

CHANNEL = "keystile:invalidate"

# Write the loaded value unless the key was invalidated moments ago: a load that read
# the source just before a revocation committed must not put its stale copy back.
# KEYS[3] is the outage copy (ARGV[3]: its lifetime in ms, 0: none kept).
_SET_UNLESS_TOMBSTONE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3]) end
return 1
"""

# Tombstone the key, drop its copy and tell every worker, atomically, in one round trip.
# The keys share a hash tag (one cluster slot); PUBLISH from a script reaches every
# node's subscribers on Redis Cluster too (the cluster bus broadcasts it).
# ARGV[4] says what becomes of the outage copy (see `OutageCopy`); ARGV[5]: its lifetime.
_INVALIDATE = """
redis.call('SET', KEYS[2], 1, 'PX', ARGV[1])
if ARGV[4] == 'keep' then
  redis.call('DEL', KEYS[1])
else
  redis.call('DEL', KEYS[1], KEYS[3])
end
if ARGV[4] == 'end' and tonumber(ARGV[5]) > 0 then
  redis.call('SET', KEYS[3], 'null', 'PX', ARGV[5])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# Replace the copies with a value read from the source after a change to it, and tell
# every worker. Unless the key was invalidated moments ago: that may have been a later
# change (a revocation) than the value read, so the copies are dropped instead (an ended
# outage copy stays ended). The tombstone keeps a load that read the source before the
# change from writing its copy back. ARGV[3]: the outage copy's lifetime (0: none kept).
_REFRESH = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[1])
  if redis.call('GET', KEYS[3]) ~= 'null' then redis.call('DEL', KEYS[3]) end
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3]) end
end
redis.call('SET', KEYS[2], 1, 'PX', ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""

# What an invalidation does to the outage copy: "drop" it (the value changed), "keep" it
# (only bookkeeping changed: a session's or an API key's last use), or "end" it (the
# subject is gone for good: reads during an outage get None, not unavailable).
OutageCopy = Literal["drop", "keep", "end"]
_SEVERITY: dict[str, int] = {"keep": 0, "drop": 1, "end": 2}


async def publish(redis: Redis, namespace: str, key: str) -> bool:
    """Tell every worker's listener that `key` of `namespace` changed; False if Redis failed."""
    try:
        await redis.publish(CHANNEL, json.dumps([namespace, key]))
    except REDIS_FAILURES:
        _log.warning("invalidation not published", extra={"namespace": namespace})
        return False
    return True


@dataclass(frozen=True, slots=True)
class SharedCopy:
    """An entry's shared (Redis) copy as another call already read it (None: absent).

    The login gate reads the user-cache entry in its script; `TieredCache.get` then
    uses this instead of reading Redis again.
    """

    raw: bytes | None


class LocalCache(Generic[K, V]):
    """A bounded in-process mapping whose entries expire after `ttl` seconds."""

    def __init__(self, *, ttl: float, max_entries: int = 100_000) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if expires_at <= time.monotonic():
            self._entries.pop(key, None)
            return None
        return value

    def set(self, key: K, value: V, ttl: float | None = None) -> None:
        lifetime = self._ttl if ttl is None else min(ttl, self._ttl)
        if lifetime <= 0:
            return
        self._entries[key] = (time.monotonic() + lifetime, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def delete(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class SingleFlight(Generic[K, V]):
    """Run at most one load per key at a time; concurrent callers await the same result."""

    def __init__(self) -> None:
        self._pending: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            # Mark retrieved: if no one else was waiting, this is not an "unhandled" error.
            future.exception()
            raise
        else:
            future.set_result(value)
            return value
        finally:
            del self._pending[key]


class TieredCache(Generic[V]):
    """Local cache over Redis over a loader, for one namespace of string keys.

    Values must survive a JSON round trip through `encode`/`decode`. Redis trouble
    never fails a read: it is skipped (through `circuit`) and the loader answers.
    Build one with `CacheHub.tiered`, so other workers' invalidations reach it.
    """

    def __init__(
        self,
        namespace: str,
        redis: Redis,
        *,
        encode: Callable[[V], Any],
        decode: Callable[[Any], V],
        local_ttl: float,
        redis_ttl: float,
        max_entries: int = 100_000,
        tombstone_ttl: float = 5.0,
        circuit: Circuit | None = None,
        outage_grace: float = 0.0,
        tagged_keys: bool = False,
        batch: RedisBatch | None = None,
    ) -> None:
        """`batch`: a fill made inside its block joins the block's one round trip."""
        self.namespace = namespace
        self._tagged = tagged_keys
        self._batch = batch
        self._redis = redis
        self._circuit = circuit or _cache_circuit()
        self._encode = encode
        self._decode = decode
        self._redis_ttl = redis_ttl
        self._tombstone_ms = int(tombstone_ttl * 1000)
        # The outage copy outlives the shared copy by the grace, so an entry in use when
        # PostgreSQL went down is served for at least `outage_grace` seconds of the outage.
        self._outage_ms = int((redis_ttl + outage_grace) * 1000) if outage_grace > 0 else 0
        self._set_unless_tombstone = redis.register_script(_SET_UNLESS_TOMBSTONE)
        self._invalidate = redis.register_script(_INVALIDATE)
        self._refresh = redis.register_script(_REFRESH)
        self.local: LocalCache[str, V] = LocalCache(ttl=local_ttl, max_entries=max_entries)
        self._flight: SingleFlight[str, V | None] = SingleFlight()
        # Keys being loaded right now -> whether an invalidation arrived meanwhile.
        self._loading: dict[str, bool] = {}
        # Invalidations that did not reach Redis, replayed when it answers again.
        self.unpublished: dict[str, OutageCopy] = {}
        self._failures = 0  # invalidations that did not reach Redis, ever

    def redis_key(self, key: str) -> str:
        """Return the Redis key of `key`'s shared copy.

        The key is its own hash tag, or (`tagged_keys`) carries one: either way a value,
        its tombstone and its outage copy share one Redis Cluster slot.
        """
        return f"keystile:{self.namespace}:{key if self._tagged else '{' + key + '}'}"

    def _tombstone_key(self, key: str) -> str:
        return self.redis_key(key) + ":invalidated"

    def _outage_key(self, key: str) -> str:
        return self.redis_key(key) + ":outage"

    def forget(self, key: str) -> None:
        """Drop the local copy, and make a load in flight for `key` not cache its result."""
        self.local.delete(key)
        if key in self._loading:
            self._loading[key] = True

    def forget_all(self) -> None:
        """Drop every local copy (after missed messages, e.g. a pub/sub reconnect)."""
        self.local.clear()
        for key in self._loading:
            self._loading[key] = True

    async def get(
        self,
        key: str,
        load: Callable[[], Awaitable[V | None]],
        *,
        shared: SharedCopy | None = None,
    ) -> V | None:
        """Return the value for `key`, loading it at most once across concurrent callers.

        `shared` is the Redis copy as another call read it moments ago (the login gate):
        Redis is then not read again. A copy read that way is used, not kept in this
        worker: it was read before this cache could watch for its invalidation.
        """
        value = self.local.get(key)
        if value is not None:
            metrics.cache_lookups(self.namespace, "local_hit").inc()
            return value
        if shared is not None and shared.raw is not None:
            value = self._decoded(shared.raw)
            if value is not None:
                metrics.cache_lookups(self.namespace, "redis_hit").inc()
                return value
        read_shared = shared is None
        # Callers that join another's load are not counted: one lookup, one load.
        return await self._flight.run(key, lambda: self._load(key, load, read_shared))

    def _decoded(self, raw: bytes | str) -> V | None:
        try:
            return self._decode(json.loads(raw))
        except ValueError:
            # Written under another key or format (a secret rotated, an old release).
            _log.warning("undecodable cache entry ignored", extra={"namespace": self.namespace})
            return None

    async def _load(
        self, key: str, load: Callable[[], Awaitable[V | None]], read_shared: bool
    ) -> V | None:
        self._loading[key] = False
        try:
            value = await self._load_through(key, load, read_shared)
            invalidated_meanwhile = self._loading[key]
        finally:
            del self._loading[key]
        if value is not None and not invalidated_meanwhile:
            self.local.set(key, value)
        return value

    async def _load_through(
        self, key: str, load: Callable[[], Awaitable[V | None]], read_shared: bool
    ) -> V | None:
        if read_shared:
            raw = await self._circuit.call(lambda: self._redis.get(self.redis_key(key)), nothing)
            cached = None if raw is None else self._decoded(raw)
            if cached is not None:
                metrics.cache_lookups(self.namespace, "redis_hit").inc()
                return cached
        metrics.cache_lookups(self.namespace, "miss").inc()
        try:
            value = await load()
        except DependencyUnavailable:
            found, kept = await self._outage_copy(key)
            if not found:
                raise
            return kept
        if value is not None:
            await self._fill(key, value)
        return value

    async def _fill(self, key: str, value: V) -> None:
        keys = [self.redis_key(key), self._tombstone_key(key), self._outage_key(key)]
        args: list[str | int] = [
            json.dumps(self._encode(value)),
            int(self._redis_ttl * 1000),
            self._outage_ms,
        ]
        if (
            self._batch is not None
            and self._circuit.available
            # EVAL, not EVALSHA: a pipeline cannot load a missing script on its own.
            and self._batch.defer(lambda pipe: pipe.eval(_SET_UNLESS_TOMBSTONE, 3, *keys, *args))
        ):
            return
        await self._circuit.call(
            lambda: self._set_unless_tombstone(keys=keys, args=args),
            nothing,
        )

    async def _outage_copy(self, key: str) -> tuple[bool, V | None]:
        """The value as last loaded, while the source is down and the copy is in its grace.

        Return (True, value); (True, None) for a key whose copy was ended (its subject
        is gone for good: a revoked session reads as absent, 401, not as unavailable);
        (False, None) when there is no copy. Every invalidation deletes or ends the
        copy with the shared one, so a revocation that reached Redis (before or during
        the outage) is never undone by it.
        """
        if not self._outage_ms:
            return False, None
        raw = await self._circuit.call(lambda: self._redis.get(self._outage_key(key)), nothing)
        if raw is None:
            return False, None
        try:
            stored = json.loads(raw)
            value = None if stored is None else self._decode(stored)
        except ValueError:
            return False, None
        metrics.cache_lookups(self.namespace, "outage_copy").inc()
        return True, value

    async def invalidate(self, key: str, *, outage_copy: OutageCopy = "drop") -> None:
        """Forget `key` here, in Redis, and (through pub/sub) on every other worker.

        Always tries Redis, even while reads skip it: an invalidation must not be lost.
        `outage_copy`: "drop" it with the shared copy (the default); "keep" it when only
        bookkeeping changed (a touch), so a PostgreSQL outage right after a touch still
        finds it; "end" it when the source has committed that the subject is gone for
        good (a revoked session): during an outage reads then get None for the grace,
        not a `DependencyUnavailable`.
        """
        self.forget(key)
        await self._tombstone_and_publish(key, outage_copy)

    async def replay_unpublished(self) -> None:
        """Send again the invalidations in `unpublished`; one that fails again stays there.

        An entry leaves `unpublished` only once its invalidation reached Redis, so a
        replay cut short (cancelled at shutdown, an unexpected error) loses nothing: the
        next one sends the rest.
        """
        for key, outage_copy in list(self.unpublished.items()):
            self.forget(key)
            failures = self._failures
            sent = await self._tombstone_and_publish(key, outage_copy)
            # An invalidation that failed while this one was on its way may be of a later
            # change (or end the outage copy where this drops it): it stays for the next.
            if sent and self._failures == failures:
                del self.unpublished[key]

    async def _tombstone_and_publish(self, key: str, outage_copy: OutageCopy) -> bool:
        """Invalidate `key` in Redis and on every worker; False (kept in `unpublished`) if not."""

        async def tombstone_and_publish() -> bool:
            await self._invalidate(
                keys=[self.redis_key(key), self._tombstone_key(key), self._outage_key(key)],
                args=[
                    self._tombstone_ms,
                    CHANNEL,
                    json.dumps([self.namespace, key]),
                    outage_copy,
                    self._outage_ms,
                ],
            )
            return True

        async def unpublished() -> bool:
            self._unpublished(key, outage_copy)
            return False

        return await self._circuit.attempt(tombstone_and_publish, unpublished)

    def _unpublished(self, key: str, outage_copy: OutageCopy) -> None:
        # Other workers' copies (and a promoted replica's) live on until this worker
        # reaches Redis again and replays it (`CacheHub.listen`); say so loudly.
        _log.warning("cache invalidation not published", extra={"namespace": self.namespace})
        pending = self.unpublished.get(key, "keep")
        self.unpublished[key] = max(pending, outage_copy, key=_SEVERITY.__getitem__)
        self._failures += 1

    async def refresh(self, key: str, value: V) -> None:
        """Replace every copy of `key` with `value`, read from the source after a change.

        For a change that leaves the entry in use (an API key's HMAC stored again under
        the current secret key): unlike `invalidate`, the outage copy then carries the
        change too. If `key` was invalidated moments ago, that may have been a later
        change than `value`, so the copies are dropped instead. Redis failing leaves an
        invalidation ("drop") to replay, as `invalidate` does.
        """
        self.forget(key)

        async def replace() -> None:
            await self._refresh(
                keys=[self.redis_key(key), self._tombstone_key(key), self._outage_key(key)],
                args=[
                    json.dumps(self._encode(value)),
                    int(self._redis_ttl * 1000),
                    self._outage_ms,
                    self._tombstone_ms,
                    CHANNEL,
                    json.dumps([self.namespace, key]),
                ],
            )

        async def unpublished() -> None:
            self._unpublished(key, "drop")

        await self._circuit.attempt(replace, unpublished)


def _cache_circuit(retry_interval: float = 1.0) -> Circuit:
    return Circuit(
        "caches",
        retry_interval=retry_interval,
        meanwhile="reads go to PostgreSQL",
        log=_log,
    )


class CacheHub:
    """This worker's caches that other workers invalidate, and the listener that does it.

    `tiered(...)` builds a `TieredCache` and registers it, so a cache cannot be built
    without its invalidation. `subscribe` adds a callback for a namespace of messages
    that is not a cache (e.g. signing key rotations). `listen` is the loop that
    subscribes to the channel and drops local copies as messages arrive; it
    reconnects by itself when Redis comes back, and while Redis is away local
    entries expire by TTL, so nothing stays stale for longer than a few seconds.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        retry_interval: float = 0.5,
        outage_grace: float = 0.0,
        batch: RedisBatch | None = None,
    ) -> None:
        """`batch`: the caches' fills made inside its block join its one round trip."""
        self._redis = redis
        self._batch = batch
        self._retry_interval = retry_interval
        self._outage_grace = outage_grace
        self._circuit = _cache_circuit()
        self._caches: dict[str, TieredCache[Any]] = {}
        self._callbacks: dict[str, Callable[[str | None], None]] = {}
        self.ready = asyncio.Event()

    def tiered(
        self,
        namespace: str,
        *,
        encode: Callable[[V], Any],
        decode: Callable[[Any], V],
        local_ttl: float,
        redis_ttl: float,
        outage_copy: bool = False,
        tagged_keys: bool = False,
    ) -> TieredCache[V]:
        """Return a new tiered cache for `namespace`, invalidated on every worker.

        `outage_copy`: keep a copy in Redis for the hub's outage grace, served when the
        loader finds PostgreSQL down (authentication state: sessions, token epochs).
        `tagged_keys`: the keys carry their own Redis Cluster hash tag (`{...}`).
        """
        cache = TieredCache(
            namespace,
            self._redis,
            encode=encode,
            decode=decode,
            local_ttl=local_ttl,
            redis_ttl=redis_ttl,
            circuit=self._circuit,
            outage_grace=self._outage_grace if outage_copy else 0.0,
            tagged_keys=tagged_keys,
            batch=self._batch,
        )
        self.register(cache)
        return cache

    def register(self, cache: TieredCache[Any]) -> None:
        """Drop `cache`'s local copies when another worker invalidates them."""
        if cache.namespace in self._caches:
            raise ValueError(f"cache namespace {cache.namespace!r} registered twice")
        self._caches[cache.namespace] = cache

    def subscribe(self, namespace: str, callback: Callable[[str | None], None]) -> None:
        """Call `callback(key)` on each message for `namespace`, and `callback(None)` after
        every (re)connection, since messages sent while disconnected were lost.

        The callback runs on the listener's task: it must not block (schedule work instead).
        """
        self._callbacks[namespace] = callback

    def forget_all(self) -> None:
        """Drop every local copy of every cache, as after a reconnection."""
        for cache in self._caches.values():
            cache.forget_all()

    async def publish(self, namespace: str, key: str) -> bool:
        """Tell every worker that `key` of `namespace` changed; False if Redis failed."""
        return await publish(self._redis, namespace, key)

    async def _replay_unpublished(self) -> None:
        """Send again the invalidations that failed while Redis was away (e.g. a failover):
        the promoted replica still holds the copies they were meant to delete. Each stays
        pending until sent, so a replay cancelled or failed part-way is finished next time."""
        for cache in self._caches.values():
            await cache.replay_unpublished()

    def _apply(self, data: bytes | str) -> None:
        try:
            namespace, key = json.loads(data)
        except (ValueError, TypeError):
            return
        cache = self._caches.get(namespace)
        if cache is not None:
            cache.forget(key)
        callback = self._callbacks.get(namespace)
        if callback is not None:
            callback(key)

    async def listen(self) -> None:
        """Apply invalidation messages until cancelled (run it with `keystile.tasks.background`).

        Redis trouble (`REDIS_FAILURES`) is retried here. Any other error (a bug, such as
        a subscriber's callback raising) ends this call with `ready` clear; `background`
        logs it and calls `listen` again, which subscribes afresh, forgets every local
        copy, replays what was not published and tells the callbacks, as after a
        reconnection. Meanwhile local entries live out their short TTL, as while Redis is
        away.
        """
        while True:
            try:
                if is_cluster(self._redis):
                    # The cluster's pub/sub picks its node from the slot map: load it first.
                    await self._redis.initialize()
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    # Entries cached while we were deaf may have missed messages.
                    self.forget_all()
                    await self._replay_unpublished()
                    for callback in self._callbacks.values():
                        callback(None)
                    self.ready.set()
                    while True:
                        # redis-py's timeouts can swallow our cancel(): notice it anyway.
                        stop_if_cancelled()
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and message["type"] == "message":
                            self._apply(message["data"])
            except REDIS_FAILURES:
                # redis-py's own timeouts can turn our cancel() into a TimeoutError.
                stop_if_cancelled()
                self.ready.clear()
                await asyncio.sleep(self._retry_interval)
            except BaseException:
                # Deaf until `background` runs `listen` again, whatever ended this one.
                self.ready.clear()
                raise
