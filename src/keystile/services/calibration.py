"""Measure argon2id on this machine (`keystile hash calibrate`).

`calibrate` finds the largest time cost whose hash stays within a target, never
going below OWASP's minimum (m=19 MiB, t=2, p=1; S4). `measure_rate` is the
in-process ceiling: verifications per second through `PasswordHasher` with all its
threads busy, which cold password logins cannot beat.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from dataclasses import dataclass, replace

import argon2

from keystile.services.passwords import Argon2Parameters, PasswordHasher

__all__ = ["Calibration", "calibrate", "measure_hash_ms", "measure_rate"]

OWASP_MINIMUM = Argon2Parameters()
_MAX_TIME_COST = 64


@dataclass(frozen=True, slots=True)
class Calibration:
    """The parameters chosen and what one hash costs with them."""

    parameters: Argon2Parameters
    hash_ms: float
    within_target: bool


def measure_hash_ms(parameters: Argon2Parameters, *, samples: int = 3) -> float:
    """Return the median time of one argon2id hash with `parameters`, in milliseconds."""
    hasher = argon2.PasswordHasher(
        time_cost=parameters.time_cost,
        memory_cost=parameters.memory_kib,
        parallelism=parameters.parallelism,
        type=argon2.Type.ID,
    )
    password = secrets.token_urlsafe(16)
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        hasher.hash(password)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def calibrate(
    target_ms: float, *, memory_kib: int = OWASP_MINIMUM.memory_kib, parallelism: int = 1
) -> Calibration:
    """Return the largest time cost (memory and lanes fixed) whose hash takes <= `target_ms`.

    Memory below OWASP's 19 MiB is raised to it; if even t=2 is over the target,
    t=2 is returned with `within_target` False.
    """
    base = Argon2Parameters(
        memory_kib=max(memory_kib, OWASP_MINIMUM.memory_kib),
        time_cost=OWASP_MINIMUM.time_cost,
        parallelism=parallelism,
    )
    floor_ms = measure_hash_ms(base)
    if floor_ms > target_ms:
        return Calibration(base, floor_ms, within_target=False)
    # Time grows about linearly with t: estimate, then step to the exact boundary.
    per_pass = floor_ms / base.time_cost
    time_cost = min(_MAX_TIME_COST, max(base.time_cost, int(target_ms / per_pass)))
    best = Calibration(base, floor_ms, within_target=True)
    while time_cost > base.time_cost:
        took = measure_hash_ms(replace(base, time_cost=time_cost))
        if took <= target_ms:
            best = Calibration(replace(base, time_cost=time_cost), took, within_target=True)
            break
        time_cost -= 1
    while best.parameters.time_cost < _MAX_TIME_COST:
        candidate = replace(best.parameters, time_cost=best.parameters.time_cost + 1)
        took = measure_hash_ms(candidate)
        if took > target_ms:
            break
        best = Calibration(candidate, took, within_target=True)
    return best


async def measure_rate(hasher: PasswordHasher, *, seconds: float) -> float:
    """Return verifications per second with every hashing thread kept busy for `seconds`."""
    password = secrets.token_urlsafe(16)
    stored = await hasher.hash(password)
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await hasher.verify(stored, password)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(hasher.threads)))
    return done / (time.perf_counter() - started)
