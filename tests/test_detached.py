"""`Detached`: work a request answers before it is done, which shutdown waits for."""

from __future__ import annotations

import asyncio
import logging

import pytest

from keystile.tasks import Detached


async def test_wait_returns_once_every_started_piece_of_work_has_ended() -> None:
    detached, finished = Detached(limit=10), []

    async def work(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        finished.append(name)
        if name == "first":  # work started by work is waited for too
            await detached.submit(work("spawned", 0.05), name="spawned")

    await detached.submit(work("first", 0.05), name="first")
    await detached.submit(work("second", 0.01), name="second")
    assert finished == []  # started, not awaited: the caller goes on at once
    await detached.wait()
    assert sorted(finished) == ["first", "second", "spawned"]


async def test_past_its_limit_the_work_is_done_by_the_caller() -> None:
    detached, gate = Detached(limit=2), asyncio.Event()

    async def blocked() -> None:
        await gate.wait()

    await detached.submit(blocked(), name="one")
    await detached.submit(blocked(), name="two")
    third = asyncio.create_task(detached.submit(blocked(), name="three"))
    await asyncio.sleep(0.05)
    assert not third.done()  # two run detached: the third caller waits for its own work
    gate.set()
    await asyncio.wait_for(third, 1)
    await detached.wait()


async def test_past_its_limit_a_failure_reaches_the_caller() -> None:
    detached, gate = Detached(limit=1), asyncio.Event()

    async def blocked() -> None:
        await gate.wait()

    async def failing() -> None:
        raise RuntimeError("no connection")

    await detached.submit(blocked(), name="one")
    with pytest.raises(RuntimeError):
        await detached.submit(failing(), name="two")
    gate.set()
    await detached.wait()


async def test_a_detached_failure_is_logged_by_name_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    detached = Detached(limit=10)

    async def failing() -> None:
        raise RuntimeError("no connection")

    with caplog.at_level(logging.ERROR, logger="keystile.tasks"):
        await detached.submit(failing(), name="password_reset_requested")
        await detached.wait()
    [record] = [r for r in caplog.records if r.getMessage() == "detached work failed"]
    assert record.job == "password_reset_requested"  # type: ignore[attr-defined]
