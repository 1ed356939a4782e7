"""Rate-limit and backoff counters: atomic in Redis, per process when Redis is away.

Two primitives serve every limit keystile has:

- GCRA ("generic cell rate algorithm"): one timestamp per key, the theoretical
  arrival time (TAT). Several keys are checked and charged in one Lua call, all
  or nothing, so a request refused by its per-IP limit does not also spend its
  per-account allowance, and concurrent workers can never both take the last slot.
- Exponential backoff: a failure count per key and a "blocked until" instant.

Both read the clock with Redis `TIME`, so every worker agrees on "now" (scripts
replicate their effects, so reading the clock before writing is safe). When Redis
does not answer (the client's socket timeouts bound each call, S29) the same
arithmetic runs in this process instead: limits keep holding, only no longer
shared, and a warning says so. It never fails open silently.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.crc import key_slot

from keystile.rates import Rate
from keystile.stores.cache import LocalCache
from keystile.stores.circuit import Circuit
from keystile.stores.redis import is_cluster
from keystile.stores.redis_batch import Queue, RedisBatch

__all__ = [
    "GCRA_LUA",
    "Backoff",
    "BackoffResult",
    "CounterStore",
    "FallbackCounterStore",
    "GcraResult",
    "MemoryCounterStore",
    "RedisCounterStore",
    "slot_groups",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GcraResult:
    """The state of one limit after a check."""

    rate: Rate
    allowed: bool
    remaining: int
    retry_after: float  # seconds until one more request would be allowed (0 if allowed)
    reset_after: float  # seconds until the full burst is available again


@dataclass(frozen=True, slots=True)
class Backoff:
    """Free failures, then delays of base, 2 x base, 4 x base ... up to `max_delay` seconds.

    A key's failures are forgotten `window` seconds after the last one.
    """

    free_failures: int
    base_delay: float
    max_delay: float
    window: float


@dataclass(frozen=True, slots=True)
class BackoffResult:
    failures: int
    delay: float  # seconds the key is now blocked for (0: still within the free failures)


def slot_groups(keys: list[str]) -> list[list[int]]:
    """Group the indexes of `keys` by Redis Cluster slot, in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key_slot(key.encode()), []).append(index)
    return list(groups.values())


class CounterStore(Protocol):
    """What the rate limiter and the login throttle need from storage."""

    async def gcra(self, keys: list[str], rates: list[Rate]) -> list[GcraResult]: ...
    async def backoff_wait(self, keys: list[str]) -> float: ...
    async def backoff_fail(self, failures: list[tuple[str, Backoff]]) -> list[BackoffResult]:
        """Count one failure on each (key, backoff); return each key's state (one call)."""
        ...

    async def forget(self, keys: list[str]) -> None: ...
    async def mark(self, key: str, ttl: float) -> None: ...
    async def is_marked(self, key: str) -> bool: ...
    async def mark_new(self, keys: list[str], ttl: float) -> list[bool]:
        """Mark every key; return, per key, whether it was not marked before (one call)."""
        ...


# Lua: charge GCRA limits all or nothing. `keys`, `intervals` (ms) and `counts` are
# parallel lists; returns allowed (1/0) and, per key, remaining, retry_after_ms and
# reset_after_ms. Shared by `_GCRA` and the login gate's script (stores/login_gate.py).
GCRA_LUA = """
local function gcra_charge(keys, intervals, counts, now)
  local allowed = 1
  local out = {}
  local tats = {}
  for i, key in ipairs(keys) do
    local interval = intervals[i]
    local tat = tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
    local new_tat = tat + interval
    local allow_at = new_tat - interval * counts[i]
    if allow_at > now then
      allowed = 0
      table.insert(out, 0); table.insert(out, math.ceil(allow_at - now))
      table.insert(out, math.ceil(tat - now))
    else
      table.insert(out, math.floor((now - allow_at) / interval)); table.insert(out, 0)
      table.insert(out, math.ceil(new_tat - now))
    end
    tats[i] = new_tat
  end
  if allowed == 1 then
    for i, key in ipairs(keys) do
      redis.call('SET', key, string.format('%.3f', tats[i]), 'PX', math.ceil(tats[i] - now) + 1)
    end
  end
  return allowed, out
end
"""

# KEYS: one per limit. ARGV: interval_ms, count for each key, in order.
# Returns {allowed, then per key: remaining, retry_after_ms, reset_after_ms}.
_GCRA = (
    GCRA_LUA
    + """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local intervals, counts = {}, {}
for i = 1, #KEYS do
  intervals[i] = tonumber(ARGV[2 * i - 1])
  counts[i] = tonumber(ARGV[2 * i])
end
local allowed, limits = gcra_charge(KEYS, intervals, counts, now)
local out = {allowed}
for _, value in ipairs(limits) do table.insert(out, value) end
return out
"""
)

# KEYS: backoff hashes. Returns the longest remaining block in ms (0: none).
_BACKOFF_WAIT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for _, key in ipairs(KEYS) do
  local blocked_until = tonumber(redis.call('HGET', key, 'until'))
  if blocked_until and blocked_until - now > wait then wait = blocked_until - now end
end
return math.ceil(wait)
"""

# KEYS[1]: backoff hash. ARGV: free_failures, base_ms, max_ms, window_ms.
# Returns {failures, delay_ms}.
_BACKOFF_FAIL = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local failures = redis.call('HINCRBY', KEYS[1], 'n', 1)
local over = failures - tonumber(ARGV[1])
local delay = 0
if over > 0 then
  delay = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ math.min(over - 1, 40))
  redis.call('HSET', KEYS[1], 'until', string.format('%d', math.ceil(now + delay)))
end
redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(tonumber(ARGV[4]), delay)))
return {failures, math.ceil(delay)}
"""


class RedisCounterStore:
    """Counters in Redis, shared by every worker; each operation is one atomic script.

    On Redis Cluster a script runs on one slot: keys of one subject share a hash tag,
    and a check over several subjects (an address and an account) runs one script per
    slot, in order, stopping at the first refusal. The earlier subjects' charges then
    stand (an address refused by its account's limit still spent its own allowance),
    but a refused address never spends an account's allowance.
    """

    def __init__(self, redis: Redis, *, batch: RedisBatch | None = None) -> None:
        """With `batch`, marks and forgets made inside its block join its one round trip."""
        self._redis = redis
        self._batch = batch
        self._cluster = is_cluster(redis)
        self._gcra = redis.register_script(_GCRA)
        self._wait = redis.register_script(_BACKOFF_WAIT)

    async def gcra(self, keys: list[str], rates: list[Rate]) -> list[GcraResult]:
        if not self._cluster:
            return await self._gcra_one_slot(keys, rates)
        results: list[GcraResult] = []
        for group in slot_groups(keys):
            checked = await self._gcra_one_slot([keys[i] for i in group], [rates[i] for i in group])
            results += checked
            if not checked[0].allowed:
                break
        allowed = len(results) == len(keys) and all(result.allowed for result in results)
        unchecked = [
            GcraResult(rate=rate, allowed=False, remaining=0, retry_after=0, reset_after=0)
            for rate in rates[len(results) :]
        ]
        return [dataclasses.replace(result, allowed=allowed) for result in results] + unchecked

    async def _gcra_one_slot(self, keys: list[str], rates: list[Rate]) -> list[GcraResult]:
        args: list[float] = []
        for rate in rates:
            args += [rate.interval_ms, rate.count]
        raw = await self._gcra(keys=keys, args=args)
        allowed = bool(raw[0])
        return [
            GcraResult(
                rate=rate,
                allowed=allowed,
                remaining=int(raw[1 + 3 * i]),
                retry_after=int(raw[2 + 3 * i]) / 1000,
                reset_after=int(raw[3 + 3 * i]) / 1000,
            )
            for i, rate in enumerate(rates)
        ]

    async def backoff_wait(self, keys: list[str]) -> float:
        if not self._cluster:
            return int(await self._wait(keys=keys)) / 1000
        waits = [
            int(await self._wait(keys=[keys[i] for i in group])) for group in slot_groups(keys)
        ]
        return max([0, *waits]) / 1000

    async def backoff_fail(self, failures: list[tuple[str, Backoff]]) -> list[BackoffResult]:
        def count_each(pipe: Any) -> None:
            for key, backoff in failures:
                # EVAL, not EVALSHA: a pipeline cannot load a missing script on its own.
                pipe.eval(
                    _BACKOFF_FAIL,
                    1,
                    key,
                    backoff.free_failures,
                    backoff.base_delay * 1000,
                    backoff.max_delay * 1000,
                    backoff.window * 1000,
                )

        return [
            BackoffResult(failures=int(counted), delay=int(delay) / 1000)
            for counted, delay in await self._pipelined(count_each)
        ]

    async def forget(self, keys: list[str]) -> None:
        if self._batch is not None and self._batch.defer(lambda pipe: _delete(pipe, keys)):
            return
        await self._redis.delete(*keys)

    async def mark(self, key: str, ttl: float) -> None:
        px = max(1, int(ttl * 1000))
        if self._batch is not None and self._batch.defer(lambda pipe: pipe.set(key, b"1", px=px)):
            return
        await self._redis.set(key, b"1", px=px)

    async def is_marked(self, key: str) -> bool:
        return bool(await self._redis.exists(key))

    async def mark_new(self, keys: list[str], ttl: float) -> list[bool]:
        # SET ... GET (Redis 6.2) marks and renews the lifetime in one command per key,
        # and returns the previous value: absent means new. One round trip in all, with
        # the writes a batch has queued so far.
        px = max(1, int(ttl * 1000))

        def mark_each(pipe: Any) -> None:
            for key in keys:
                pipe.set(key, b"1", px=px, get=True)

        previous = await self._pipelined(mark_each)
        return [value is None for value in previous]

    async def _pipelined(self, commands: Queue) -> list[Any]:
        # One round trip, with the writes the open batch has queued so far.
        if self._batch is not None:
            return await self._batch.send_with(commands)
        async with self._redis.pipeline(transaction=False) as pipe:
            commands(pipe)
            return list(await pipe.execute())


class MemoryCounterStore:
    """The same arithmetic in this process: the fallback while Redis is away.

    Bounded: past `max_keys` the least recently used keys are dropped.
    """

    def __init__(self, *, max_keys: int = 100_000) -> None:
        day = 86_400.0
        self._tats: LocalCache[str, float] = LocalCache(ttl=day, max_entries=max_keys)
        self._backoffs: LocalCache[str, tuple[int, float]] = LocalCache(
            ttl=day, max_entries=max_keys
        )
        self._marks: LocalCache[str, bool] = LocalCache(ttl=90 * day, max_entries=max_keys)

    async def gcra(self, keys: list[str], rates: list[Rate]) -> list[GcraResult]:
        now = time.monotonic() * 1000
        new_tats: list[float] = []
        results: list[tuple[bool, int, float, float]] = []
        for key, rate in zip(keys, rates, strict=True):
            interval, period = rate.interval_ms, rate.period * 1000
            tat = max(self._tats.get(key) or now, now)
            new_tat = tat + interval
            allow_at = new_tat - period
            if allow_at > now:
                results.append((False, 0, allow_at - now, tat - now))
            else:
                results.append((True, math.floor((now - allow_at) / interval), 0, new_tat - now))
            new_tats.append(new_tat)
        allowed = all(ok for ok, *_ in results)
        if allowed:
            for key, new_tat in zip(keys, new_tats, strict=True):
                self._tats.set(key, new_tat, ttl=(new_tat - now) / 1000 + 0.001)
        return [
            GcraResult(rate, allowed, remaining, retry / 1000, reset / 1000)
            for rate, (_, remaining, retry, reset) in zip(rates, results, strict=True)
        ]

    async def backoff_wait(self, keys: list[str]) -> float:
        now = time.monotonic()
        waits = [entry[1] - now for key in keys if (entry := self._backoffs.get(key))]
        return max([0.0, *waits])

    async def backoff_fail(self, failures: list[tuple[str, Backoff]]) -> list[BackoffResult]:
        return [self._fail(key, backoff) for key, backoff in failures]

    def _fail(self, key: str, backoff: Backoff) -> BackoffResult:
        now = time.monotonic()
        counted, blocked_until = self._backoffs.get(key) or (0, 0.0)
        counted += 1
        over = counted - backoff.free_failures
        delay = 0.0
        if over > 0:
            delay = min(backoff.max_delay, backoff.base_delay * 2 ** min(over - 1, 40))
            blocked_until = now + delay
        self._backoffs.set(key, (counted, blocked_until), ttl=max(backoff.window, delay))
        return BackoffResult(failures=counted, delay=delay)

    async def forget(self, keys: list[str]) -> None:
        for key in keys:
            self._tats.delete(key)
            self._backoffs.delete(key)
            self._marks.delete(key)

    async def mark(self, key: str, ttl: float) -> None:
        self._marks.set(key, True, ttl=ttl)

    async def is_marked(self, key: str) -> bool:
        return self._marks.get(key) is not None

    async def mark_new(self, keys: list[str], ttl: float) -> list[bool]:
        new = [self._marks.get(key) is None for key in keys]
        for key in keys:
            self._marks.set(key, True, ttl=ttl)
        return new


class FallbackCounterStore:
    """Redis first; when it fails, this process's own counters, with a warning.

    Redis trouble goes through a `Circuit`: after a failure Redis is left alone for
    `retry_interval` seconds, then tried again; the outage and the recovery are logged.
    """

    def __init__(
        self, primary: RedisCounterStore, fallback: MemoryCounterStore, *, retry_interval: float
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._circuit = Circuit(
            "rate limits",
            retry_interval=retry_interval,
            meanwhile="limits now hold per process only",
            log=_log,
        )

    @property
    def degraded(self) -> bool:
        """True from a Redis failure until Redis answers again."""
        return self._circuit.degraded

    async def _either(
        self, primary: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]
    ) -> T:
        return await self._circuit.call(primary, local)

    async def gcra(self, keys: list[str], rates: list[Rate]) -> list[GcraResult]:
        return await self._either(
            lambda: self._primary.gcra(keys, rates), lambda: self._fallback.gcra(keys, rates)
        )

    async def backoff_wait(self, keys: list[str]) -> float:
        return await self._either(
            lambda: self._primary.backoff_wait(keys), lambda: self._fallback.backoff_wait(keys)
        )

    async def backoff_fail(self, failures: list[tuple[str, Backoff]]) -> list[BackoffResult]:
        return await self._either(
            lambda: self._primary.backoff_fail(failures),
            lambda: self._fallback.backoff_fail(failures),
        )

    async def forget(self, keys: list[str]) -> None:
        # Both: a key counted locally during an outage must not outlive a success.
        await self._fallback.forget(keys)
        await self._either(lambda: self._primary.forget(keys), _nothing)

    async def mark(self, key: str, ttl: float) -> None:
        # Both: so the mark also serves this process while Redis is away.
        await self._fallback.mark(key, ttl)
        await self._either(lambda: self._primary.mark(key, ttl), _nothing)

    async def is_marked(self, key: str) -> bool:
        if await self._fallback.is_marked(key):
            return True
        return await self._either(lambda: self._primary.is_marked(key), _false)

    async def mark_new(self, keys: list[str], ttl: float) -> list[bool]:
        # Both, like `mark`; Redis decides what was new while it answers.
        local = await self._fallback.mark_new(keys, ttl)

        async def this_process() -> list[bool]:
            return local

        return await self._either(lambda: self._primary.mark_new(keys, ttl), this_process)


def _delete(pipe: Any, keys: list[str]) -> None:
    for key in keys:  # one command per key: on a cluster, keys of one call may differ in slot
        pipe.delete(key)


async def _nothing() -> None:
    return None


async def _false() -> bool:
    return False
