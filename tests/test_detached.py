"""`Detached`: work a request answers before it is done, which shutdown waits for."""

from __future__ import annotations

import asyncio
import logging

import pytest

from keystile.tasks import Detached


async def test_wait_returns_once_every_started_piece_of_work_has_ended() -> None:
    detached, finished = Detached(), []

    async def work(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        finished.append(name)
        if name == "first":  # work started by work is waited for too
            detached.start(work("spawned", 0.05), name="spawned")

    detached.start(work("first", 0.05), name="first")
    detached.start(work("second", 0.01), name="second")
    assert finished == []  # started, not awaited: the caller goes on at once
    await detached.wait()
    assert sorted(finished) == ["first", "second", "spawned"]


async def test_a_failure_is_logged_by_name_and_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    detached = Detached()

    async def failing() -> None:
        raise RuntimeError("no connection")

    with caplog.at_level(logging.ERROR, logger="keystile.tasks"):
        detached.start(failing(), name="password_reset_requested")
        await detached.wait()
    [record] = [r for r in caplog.records if r.getMessage() == "detached work failed"]
    assert record.job == "password_reset_requested"  # type: ignore[attr-defined]
    await detached.wait()  # nothing left over
