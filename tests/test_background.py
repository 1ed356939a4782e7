"""`background`: loops that live as long as a worker, and stop when it does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import timedelta

import pytest

from keystile.repositories.signing_keys import SigningKeyRecord
from keystile.services.keys import KeyRing, SecretBox
from keystile.tasks import background, run_every


async def test_a_loop_that_swallows_its_cancel_is_named_and_cancelled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stopped = asyncio.Event()

    async def stubborn() -> None:
        # What a library's timeout race can do with a cancel:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()

    caplog.set_level(logging.ERROR, logger="keystile.tasks")
    async with asyncio.timeout(10):
        async with background("stubborn-loop", stubborn, stop_grace=0.1):
            await asyncio.sleep(0.01)

    assert stopped.is_set()
    (record,) = [r for r in caplog.records if r.name == "keystile.tasks"]
    assert record.task == "stubborn-loop"  # type: ignore[attr-defined]
    assert "stubborn" in record.stack  # type: ignore[attr-defined]  # where it waited


async def test_a_loop_that_stops_when_asked_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="keystile.tasks")
    async with background("obedient-loop", lambda: asyncio.sleep(3600), stop_grace=0.1):
        await asyncio.sleep(0.01)
    assert not [r for r in caplog.records if r.name == "keystile.tasks"]


class _KeysWhoseReadSwallowsTheCancel:
    """Key storage whose read returns its rows although the reader was cancelled.

    Python 3.11's `asyncio.wait_for` (inside asyncpg) does that when the rows arrive
    together with the cancel; a real PostgreSQL cannot be made to hit that instant on
    demand, so this stands in for it.
    """

    has_replica = False

    def __init__(self) -> None:
        self.reading = asyncio.Event()

    async def select_live_keys(
        self, fingerprint: bytes, *, from_replica: bool = False
    ) -> list[SigningKeyRecord]:
        self.reading.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        return []

    async def insert_first_key(
        self, fingerprint: bytes, record: SigningKeyRecord
    ) -> SigningKeyRecord | None:
        raise AssertionError("not used")

    async def insert_next_key(
        self,
        fingerprint: bytes,
        record: SigningKeyRecord,
        *,
        promote_after: timedelta,
        retire_after: timedelta,
    ) -> tuple[SigningKeyRecord, list[str]] | None:
        raise AssertionError("not used")


async def test_the_key_ring_stops_at_once_when_its_reload_swallowed_the_cancel() -> None:
    # Seen as a CLI command hanging for the key ring's whole 60 s interval at shutdown.
    keys = _KeysWhoseReadSwallowsTheCancel()

    async def notify() -> None:
        return None

    ring = KeyRing(keys, SecretBox(os.urandom(32)), algorithm="EdDSA", notify=notify)
    task = asyncio.create_task(ring.run(interval=3600))
    ring.poke()  # as the invalidation listener does on (re)subscribing
    await keys.reading.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task


async def test_a_periodic_job_that_swallowed_the_cancel_does_not_sleep_its_interval() -> None:
    running = asyncio.Event()

    async def job() -> None:
        running.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)

    task = asyncio.create_task(run_every(3600, job, name="swallowing-job"))
    await running.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
