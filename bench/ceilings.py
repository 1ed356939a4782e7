"""The hash ceiling: argon2id verifications per second in-process, no HTTP.

One thread per server worker, each verifying back to back: argon2-cffi releases the
GIL, so the threads run in parallel as the workers' hash pools do. This is the
physical limit for cold logins with these parameters on this machine.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import argon2

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
    memory_kib: int, time_cost: int, parallelism: int, *, threads: int, duration_s: float
) -> tuple[float, float]:
    """Return (verifications per second, CPU seconds used) over `duration_s`."""
    hasher = argon2.PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=argon2.Type.ID
    )
    password = "ceiling-password"  # noqa: S105 - a throwaway input to time the hash
    password_hash = hasher.hash(password)
    barrier = threading.Barrier(threads)

    def worker(stop_after: float) -> int:
        barrier.wait()
        return _verify_loop(hasher, password_hash, password, time.monotonic() + stop_after)

    cpu_before = time.process_time()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        counts = list(pool.map(worker, [duration_s] * threads))
    elapsed = time.monotonic() - started
    return sum(counts) / elapsed, time.process_time() - cpu_before
