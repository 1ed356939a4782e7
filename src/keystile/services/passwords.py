"""Argon2id hashing off the event loop, behind admission control (S4, S5).

Legacy hashes from the Flask app (werkzeug pbkdf2/scrypt, bcrypt) verify here too,
in the same pool and under the same admission control; `needs_rehash` is true for
them, so a successful login replaces them with argon2id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
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

_log = logging.getLogger(__name__)

__all__ = ["Argon2Parameters", "PasswordHasher"]

_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    """Argon2id cost parameters; OWASP's minimum is the default."""

    memory_kib: int = 19 * 1024
    time_cost: int = 2
    parallelism: int = 1


def _lower_thread_priority(niceness: int) -> None:
    """Make the calling thread (not the process) `niceness` steps less eager for CPU."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        # On Linux a thread is a schedulable task of its own: its id takes a priority.
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), current + niceness)
    except OSError:
        _log.warning("could not lower the hashing threads' CPU priority")


class PasswordHasher:
    """Hash and verify passwords in a bounded thread pool.

    At most `threads` hashes run at once; at most `queue_limit` more wait. Past that,
    `Overloaded` is raised at once, before any work is spent, so a login storm turns
    into fast 503s instead of queueing into timeouts. argon2 releases the GIL, so the
    threads run in parallel with each other and with the event loop.

    The threads run at a lower CPU priority (`niceness`, Linux): when a storm keeps
    every core hashing, the event loops still get the CPU first, so reads and the
    503s of admission control stay fast while hashes take whatever is left.
    """

    def __init__(
        self,
        parameters: Argon2Parameters,
        *,
        threads: int,
        queue_limit: int,
        retry_after: int = 1,
        niceness: int = 0,
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=argon2.Type.ID,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=threads,
            thread_name_prefix="argon2",
            initializer=_lower_thread_priority,
            initargs=(niceness,),
        )
        self._threads = threads
        self._capacity = threads + queue_limit
        self._in_flight = 0
        self._retry_after = retry_after
        self.parameters = parameters
        # Unknown users verify against this, so their timing matches a real account (S6).
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    @property
    def dummy_hash(self) -> str:
        """A hash of a random password, to verify against when there is no account (S6)."""
        return self._dummy_hash

    @property
    def threads(self) -> int:
        """Hashes that can run at once."""
        return self._threads

    async def hash(self, password: str) -> str:
        """Return an argon2id hash of `password`."""
        return await self._run("hash", self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """Return whether `password` matches `password_hash`; malformed hashes never match.

        `password_hash` may be argon2 or a legacy pbkdf2/scrypt/bcrypt hash.
        """
        return await self._run("verify", self._verify_sync, password_hash, password)

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

    async def _run(self, operation: str, func: Callable[..., _R], *args: str) -> _R:
        if self._in_flight >= self._capacity:
            metrics.HASH_REJECTIONS.inc()
            raise Overloaded(self._retry_after)
        self._in_flight += 1
        metrics.HASH_QUEUE_DEPTH.inc()
        try:
            job = self._executor.submit(_measured, operation, func, time.perf_counter(), *args)
        except RuntimeError:  # the executor is shut down: the worker is stopping
            self._in_flight -= 1
            metrics.HASH_QUEUE_DEPTH.dec()
            raise
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            # A job cancelled before a thread took it never leaves the queue by itself.
            if job.cancel():
                metrics.HASH_QUEUE_DEPTH.dec()
            raise
        finally:
            self._in_flight -= 1


def _measured(operation: str, func: Callable[..., _R], queued_at: float, *args: str) -> _R:
    """Run `func` on a hashing thread, recording its wait for the thread and its run time."""
    started = time.perf_counter()
    metrics.HASH_QUEUE_DEPTH.dec()
    metrics.HASH_WAIT.observe(started - queued_at)
    metrics.HASHES_IN_PROGRESS.inc()
    try:
        return func(*args)
    finally:
        metrics.HASHES_IN_PROGRESS.dec()
        metrics.HASH_DURATION.labels(operation).observe(time.perf_counter() - started)
