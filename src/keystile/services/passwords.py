"""Argon2id hashing off the event loop, behind admission by wait time (S4, S5).

Legacy hashes from the Flask app (werkzeug pbkdf2/scrypt, bcrypt) verify here too,
in the same pool and under the same admission control; `needs_rehash` is true for
them, so a successful login replaces them with argon2id.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from keystile import metrics
from keystile.errors import Overloaded
from keystile.services.legacy_hashes import identify, verify_legacy

__all__ = ["MAX_STRETCH", "Argon2Parameters", "HashAdmission", "HashTicket", "PasswordHasher"]

_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    """Argon2id cost parameters; OWASP's minimum is the default."""

    memory_kib: int = 19 * 1024
    time_cost: int = 2
    parallelism: int = 1


class HashAdmission:
    """Admit hashes by the time they would wait, not by how many are queued (S5).

    A hash is admitted while its expected wait, the hashes ahead of it times the mean
    hash time over the number of threads, is within `budget` seconds. The mean is a
    moving average of the hashes this worker ran, so the budget keeps meaning seconds
    when the parameters or the machine change. A refused caller is told when its turn
    would come: refusals are handed successive slots at the rate the threads drain,
    so retries spread over the drain time instead of all returning in the same second.

    A login refused before may wait longer: the k-th cold attempt of an account since its
    last success (the login gate counts them) is admitted while its expected wait is
    within the budget times 1 + (k - 1) / 3, up to twice the budget. A client that comes
    back when told is then ahead of newcomers, so it is not refused again and again by
    the luck of when it lands, and the queue never holds more than twice the budget.

    Two means are kept. Admission uses the hashes' wall time, so an admitted caller's wait
    stays within the budget even while the threads share the CPU with the event loop.
    Turns are promised by the hashes' CPU time, the rate the threads drain once a flood
    of arrivals has been answered: promised by the wall time of that moment, when the
    event loop is busiest, the turns come too late and the threads go idle waiting for
    clients that were told to come back later than needed.
    """

    def __init__(
        self,
        *,
        threads: int,
        budget: float,
        mean_hash_seconds: float,
        smoothing: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threads = threads
        self._budget = budget
        self._mean = mean_hash_seconds
        self._cpu_mean = mean_hash_seconds
        self._smoothing = smoothing
        self._clock = clock
        self._admitted = 0  # reserved, queued or running
        self._next_turn = 0.0
        self._horizon = max(10.0, 4 * budget)  # the latest turn a refusal is promised

    @property
    def admitted(self) -> int:
        """Hashes admitted and not yet finished (reserved, waiting or running)."""
        return self._admitted

    @property
    def mean_hash_seconds(self) -> float:
        return self._mean

    @property
    def capacity_per_second(self) -> float:
        """Hashes this worker completes per second at the current mean hash time."""
        return self._threads / self._mean

    def expected_wait(self) -> float:
        """Seconds a hash admitted now would wait for a thread."""
        return self._wait(self._mean)

    def _wait(self, mean_hash_seconds: float) -> float:
        # The hashes ahead of one admitted now, drained by the threads at this mean.
        ahead = self._admitted - self._threads + 1
        return max(0, ahead) * mean_hash_seconds / self._threads

    @property
    def horizon(self) -> float:
        """The latest turn, in seconds from now, a refusal is ever promised."""
        return self._horizon

    def budget_for(self, attempt: int) -> float:
        """The longest expected wait admitted for an account's `attempt`-th cold attempt."""
        return self._budget * min(MAX_STRETCH, 1 + max(0, attempt - 1) / _ATTEMPTS_TO_STRETCH)

    def admit(self, attempt: int = 1) -> None:
        """Count one more hash, or raise `Overloaded` with the caller's turn as Retry-After.

        `attempt`: which cold attempt of its account since the last success this is.
        """
        wait = self.expected_wait()
        if wait <= self.budget_for(attempt):
            self._admitted += 1
            return
        now = self._clock()
        earliest = now + self._wait(self._cpu_mean) - self._budget
        # Promised turns are not claimed by name: a client that comes back early (or never)
        # is promised another. So the schedule is bounded: past the horizon it starts over
        # at the earliest turn, and a Retry-After never exceeds the horizon.
        if self._next_turn > earliest + self._horizon:
            self._next_turn = earliest
        turn = max(earliest, self._next_turn)
        self._next_turn = turn + self._cpu_mean / self._threads
        metrics.HASH_REJECTIONS.inc()
        raise Overloaded(max(1, math.ceil(turn - now)))

    def release(self) -> None:
        """Forget one admitted hash (finished, or never run)."""
        self._admitted -= 1

    def observe(self, seconds: float, cpu_seconds: float | None = None) -> None:
        """Fold one measured hash time (wall, and CPU if measured) into the means."""
        self._mean += self._smoothing * (seconds - self._mean)
        cpu = seconds if cpu_seconds is None else min(cpu_seconds, seconds)
        self._cpu_mean += self._smoothing * (cpu - self._cpu_mean)


_ATTEMPTS_TO_STRETCH = 3  # each earlier attempt adds a third of the budget ...
MAX_STRETCH = 2.0  # ... up to twice the budget


class HashTicket:
    """A place admitted in the hashing queue, taken before the work that leads to the hash.

    Taking it first means a refused login costs no PostgreSQL work; an unused ticket
    must be released (it is a context manager).
    """

    __slots__ = ("_admission", "_held")

    def __init__(self, admission: HashAdmission, attempt: int = 1) -> None:
        admission.admit(attempt)
        self._admission = admission
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission.release()

    def __enter__(self) -> HashTicket:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class PasswordHasher:
    """Hash and verify passwords in a bounded thread pool, behind admission by time.

    `threads` hashes run at once; more wait while their expected wait is within
    `budget` seconds (`HashAdmission`). Past it, `Overloaded` is raised at once, before
    any work is spent, with a Retry-After that says when the caller's turn would come.
    argon2 releases the GIL, so the threads run in parallel with each other and with
    the event loop, at the same CPU priority: a refusal is only worth sending if it
    does not slow the hashes that drain the queue.
    """

    def __init__(
        self,
        parameters: Argon2Parameters,
        *,
        threads: int,
        budget: float,
        mean_hash_seconds: float | None = None,
    ) -> None:
        """`budget` is the longest expected wait admitted, in seconds; the mean hash time
        starts from `mean_hash_seconds`, or from timing one hash now."""
        self._hasher = argon2.PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=argon2.Type.ID,
        )
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        self._threads = threads
        self.parameters = parameters
        # Unknown users verify against this, so their timing matches a real account (S6);
        # timing it seeds the mean hash time that admission starts from.
        started = time.perf_counter()
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        self.admission = HashAdmission(
            threads=threads,
            budget=budget,
            mean_hash_seconds=mean_hash_seconds or time.perf_counter() - started,
        )

    @property
    def dummy_hash(self) -> str:
        """A hash of a random password, to verify against when there is no account (S6)."""
        return self._dummy_hash

    @property
    def threads(self) -> int:
        """Hashes that can run at once."""
        return self._threads

    def admit(self, attempt: int = 1) -> HashTicket:
        """Reserve a place for one hash now, or raise `Overloaded` (see `HashAdmission`).

        `attempt`: which cold attempt of the account since its last success this is.
        """
        return HashTicket(self.admission, attempt)

    async def hash(self, password: str, *, ticket: HashTicket | None = None) -> str:
        """Return an argon2id hash of `password`."""
        return await self._run("hash", self._hasher.hash, ticket, password)

    async def verify(
        self, password_hash: str, password: str, *, ticket: HashTicket | None = None
    ) -> bool:
        """Return whether `password` matches `password_hash`; malformed hashes never match.

        `password_hash` may be argon2 or a legacy pbkdf2/scrypt/bcrypt hash. With a
        `ticket` the hash uses that reserved place; without one it is admitted now.
        """
        return await self._run("verify", self._verify_sync, ticket, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """Return whether a stored hash is legacy or weaker than the current parameters."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        if identify(password_hash) not in (None, "argon2"):
            return verify_legacy(password_hash, password)
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _run(
        self, operation: str, func: Callable[..., _R], ticket: HashTicket | None, *args: str
    ) -> _R:
        with ticket or self.admit():
            metrics.HASH_QUEUE_DEPTH.inc()
            try:
                job = self._executor.submit(_measured, operation, func, time.perf_counter(), *args)
            except RuntimeError:  # the executor is shut down: the worker is stopping
                metrics.HASH_QUEUE_DEPTH.dec()
                raise
            try:
                result, seconds, cpu_seconds = await asyncio.wrap_future(job)
            except asyncio.CancelledError:
                # A job cancelled before a thread took it never leaves the queue by itself.
                if job.cancel():
                    metrics.HASH_QUEUE_DEPTH.dec()
                raise
            self.admission.observe(seconds, cpu_seconds)
            return result


def _measured(
    operation: str, func: Callable[..., _R], queued_at: float, *args: str
) -> tuple[_R, float, float]:
    """Run `func` on a hashing thread; return its result, wall and CPU time; record them."""
    started = time.perf_counter()
    cpu_started = time.thread_time()
    metrics.HASH_QUEUE_DEPTH.dec()
    metrics.HASH_WAIT.observe(started - queued_at)
    metrics.HASHES_IN_PROGRESS.inc()
    try:
        result = func(*args)
    finally:
        seconds = time.perf_counter() - started
        cpu_seconds = time.thread_time() - cpu_started
        metrics.HASHES_IN_PROGRESS.dec()
        metrics.HASH_DURATION.labels(operation).observe(seconds)
        metrics.HASH_CPU.labels(operation).inc(cpu_seconds)
    return result, seconds, cpu_seconds
