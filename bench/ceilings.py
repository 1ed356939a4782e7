"""The hash ceiling: argon2id verifications per second in-process, no HTTP.

One thread per server worker, each verifying back to back: argon2-cffi releases the
GIL, so the threads run in parallel as the workers' hash pools do. This is the
physical limit for cold logins with these parameters on this machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import argon2

from bench.wrk import WrkResult

__all__ = ["hash_ceiling"]


def _verify_loop(
    hasher: argon2.PasswordHasher, password_hash: str, password: str, stop: float
) -> int:
    done = 0
    while time.monotonic() < stop:
        hasher.verify(password_hash, password)
        done += 1
    return done


def hash_ceiling(
    memory_kib: int, time_cost: int, parallelism: int, *, threads: int
) -> Callable[[float], WrkResult]:
    """Return a round runner: verify for `duration_s` on `threads` threads, count them.

    The result is shaped like a wrk run (requests over duration) so the hash ceiling
    can be an arm of the same interleaved measurement as the login scenarios.
    """
    hasher = argon2.PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=argon2.Type.ID
    )
    password = "ceiling-password"  # noqa: S105 - a throwaway input to time the hash
    password_hash = hasher.hash(password)

    def run(duration_s: float) -> WrkResult:
        barrier = threading.Barrier(threads)

        def worker(_: int) -> int:
            barrier.wait()
            return _verify_loop(hasher, password_hash, password, time.monotonic() + duration_s)

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            counts = list(pool.map(worker, range(threads)))
        elapsed = time.monotonic() - started
        return WrkResult(
            connections=threads,
            duration_s=elapsed,
            requests=sum(counts),
            p50_ms=0.0,
            p90_ms=0.0,
            p99_ms=0.0,
            max_ms=0.0,
            mean_ms=0.0,
            statuses={"200": sum(counts)},
        )

    return run
