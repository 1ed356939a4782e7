"""`background`: loops that live as long as a worker, and stop when it does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from keystile.mail.sender import OutboxSender, SenderPolicy
from keystile.repositories.outbox import ClaimedMail, OutboxStats
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


def _restarts(task: str) -> float:
    return REGISTRY.get_sample_value("keystile_background_restarts_total", {"task": task}) or 0.0


def _failures(caplog: pytest.LogCaptureFixture, task: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "keystile.tasks"
        and record.getMessage() == "background loop failed; restarting it"
        and record.task == task  # type: ignore[attr-defined]
    ]


async def test_a_loop_that_fails_is_logged_counted_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = f"flaky-loop-{uuid.uuid4().hex}"
    calls = 0
    running_again = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the loop")
        running_again.set()
        await asyncio.sleep(3600)

    caplog.set_level(logging.ERROR, logger="keystile.tasks")
    async with asyncio.timeout(10):
        async with background(task, flaky, stop_grace=0.1, restart_delay=0.01):
            await running_again.wait()

    assert calls == 2
    (record,) = _failures(caplog, task)
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "a bug in the loop"
    assert record.restart_in_seconds == 0.01  # type: ignore[attr-defined]
    assert _restarts(task) == 1
    # Stopped as asked after the restart: nothing more is logged.
    assert [r for r in caplog.records if r.name == "keystile.tasks"] == [record]


async def test_failures_in_a_row_back_off_doubling_to_the_cap_and_a_healthy_run_resets_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = f"failing-loop-{uuid.uuid4().hex}"
    calls = 0
    done = asyncio.Event()

    async def failing() -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            await asyncio.sleep(0.2)  # a run longer than healthy_after, then a failure
        if calls <= 5:
            raise RuntimeError(f"failure {calls}")
        done.set()
        await asyncio.sleep(3600)

    caplog.set_level(logging.ERROR, logger="keystile.tasks")
    async with asyncio.timeout(10):
        async with background(
            task,
            failing,
            restart_delay=0.01,
            restart_max_delay=0.03,
            healthy_after=0.1,
        ):
            await done.wait()

    delays = [record.restart_in_seconds for record in _failures(caplog, task)]  # type: ignore[attr-defined]
    assert delays == [0.01, 0.02, 0.03, 0.03, 0.01]
    assert _restarts(task) == 5


async def test_a_loop_that_returns_is_not_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = f"finite-loop-{uuid.uuid4().hex}"
    calls = 0

    async def finite() -> None:
        nonlocal calls
        calls += 1

    caplog.set_level(logging.ERROR, logger="keystile.tasks")
    async with asyncio.timeout(10):
        async with background(task, finite, restart_delay=0.01) as running:
            await asyncio.wait({running})
            assert running.done()  # nothing left to start it again

    assert calls == 1
    assert not [r for r in caplog.records if r.name == "keystile.tasks"]
    assert _restarts(task) == 0


@pytest.mark.parametrize(
    ("delays", "said"),
    [
        ({"restart_delay": 0}, "restart_delay must be more than 0 seconds, not 0"),
        ({"restart_delay": -1.0}, "restart_delay must be more than 0 seconds, not -1.0"),
        ({"restart_max_delay": 0.0}, "restart_max_delay must be more than 0 seconds, not 0.0"),
        ({"restart_delay": float("nan")}, "restart_delay must be more than 0 seconds, not nan"),
        ({"stop_grace": 0}, "stop_grace must be more than 0 seconds, not 0"),
    ],
)
async def test_a_delay_that_would_spin_is_refused_before_the_loop_starts(
    delays: dict[str, float], said: str
) -> None:
    # Without a delay, a loop that fails at once would restart without end, a core busy
    # and the log flooded: refused before the loop is ever started.
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("a bug in the loop")

    task = f"spinning-loop-{uuid.uuid4().hex}"

    async def run_briefly() -> None:
        async with asyncio.timeout(10):
            async with background(task, failing, **delays):
                await asyncio.sleep(0.05)

    with pytest.raises(ValueError, match=f"background loop '{task}': {said}$"):
        await run_briefly()
    assert calls == 0
    assert _restarts(task) == 0


async def test_shutdown_during_the_restart_backoff_ends_it_at_once() -> None:
    task = f"crashed-loop-{uuid.uuid4().hex}"
    calls = 0
    crashed = asyncio.Event()

    async def crashing() -> None:
        nonlocal calls
        calls += 1
        crashed.set()
        raise RuntimeError("a bug in the loop")

    # An hour's backoff: the exit below must not wait for it (the timeout is a safety net).
    async with asyncio.timeout(10):
        async with background(task, crashing, restart_delay=3600) as running:
            await crashed.wait()
            # The loop raised without awaiting: it was logged and counted before this ran.
            assert _restarts(task) == 1
    assert running.cancelled()
    assert calls == 1


async def test_an_error_raised_while_the_loop_stops_is_raised_on_exit_not_restarted() -> None:
    calls = 0

    async def turns_its_cancel_into_an_error() -> None:
        nonlocal calls
        calls += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("failed while stopping") from None

    async def run_and_stop() -> None:
        async with asyncio.timeout(10):
            async with background("stopping-loop", turns_its_cancel_into_an_error):
                await asyncio.sleep(0.01)

    with pytest.raises(RuntimeError, match="failed while stopping"):
        await run_and_stop()
    assert calls == 1


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


class _OutboxWhoseStatsFailOnce:
    """An empty outbox whose first stats read fails with a bug (not PostgreSQL away).

    Such a failure is not something a real PostgreSQL can be made to produce on demand.
    """

    def __init__(self) -> None:
        self.claims = 0
        self.stats_reads = 0
        self.claimed_again = asyncio.Event()

    async def claim(self, limit: int, lease_seconds: float) -> list[ClaimedMail]:
        self.claims += 1
        if self.claims > 1:
            self.claimed_again.set()
        return []

    async def stats(self) -> OutboxStats:
        self.stats_reads += 1
        if self.stats_reads == 1:
            raise RuntimeError("a bug in the stats query")
        return OutboxStats(unsent=0, oldest_unsent_age=0.0)


async def test_the_outbox_sender_goes_on_when_sampling_its_stats_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox = _OutboxWhoseStatsFailOnce()
    # Nothing is claimed, so no transport, renderer or audit log is used.
    sender = OutboxSender(
        outbox,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        SenderPolicy(poll_seconds=0.01),
    )
    caplog.set_level(logging.ERROR, logger="keystile.mail.sender")
    task = asyncio.create_task(sender.run())
    try:
        async with asyncio.timeout(10):
            await outbox.claimed_again.wait()
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    (record,) = [r for r in caplog.records if r.name == "keystile.mail.sender"]
    assert record.getMessage() == "outbox stats not sampled"
    assert record.exc_info is not None
