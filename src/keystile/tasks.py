"""One way to run a background loop for a worker's lifetime, restart it, and stop it.

The composition root enters `background(...)` on its exit stack the moment the loop's
owner exists, so shutdown (or a failure half-way through startup) cancels and awaits
every loop, in reverse order. A loop that fails with an unexpected error is logged,
counted and started again after a backoff, so one bug cannot end it for the rest of
the worker's life. Used by the invalidation listener, the key ring refresh, the
outbox sender, housekeeping and the pool sampler. `Detached` holds work a request
answers before it is done, for the exit stack to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from keystile import metrics

__all__ = [
    "HEALTHY_AFTER_SECONDS",
    "RESTART_DELAY_SECONDS",
    "RESTART_MAX_DELAY_SECONDS",
    "STOP_GRACE_SECONDS",
    "Detached",
    "background",
    "run_every",
    "stop_if_cancelled",
]

_log = logging.getLogger(__name__)


# How long a cancelled background loop may take to end before it is cancelled again.
STOP_GRACE_SECONDS = 5.0
# A failed loop starts again after RESTART_DELAY_SECONDS, doubling on each failure in a
# row up to RESTART_MAX_DELAY_SECONDS: a bug that fails at once must not spin a core or
# flood the log. A run that lasted HEALTHY_AFTER_SECONDS ends the row.
RESTART_DELAY_SECONDS = 1.0
RESTART_MAX_DELAY_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 60.0


def _stack(task: asyncio.Task[Any]) -> str:
    text = io.StringIO()
    task.print_stack(file=text)
    return text.getvalue()


@contextlib.asynccontextmanager
async def background(
    name: str,
    loop: Callable[[], Coroutine[Any, Any, None]],
    *,
    stop_grace: float = STOP_GRACE_SECONDS,
    restart_delay: float = RESTART_DELAY_SECONDS,
    restart_max_delay: float = RESTART_MAX_DELAY_SECONDS,
    healthy_after: float = HEALTHY_AFTER_SECONDS,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run `loop()` as a task while the context is open; cancel and await it on exit.

    A loop that ends by itself with an error is never silently lost: the error is
    logged with the task's name, counted (`keystile_background_restarts_total`) and
    a new `loop()` is started after `restart_delay` seconds, doubling for each
    failure in a row up to `restart_max_delay`; a run that lasted `healthy_after`
    seconds starts the row again. A loop that returns is done and is not restarted.
    Shutdown is as before: it ends the backoff at once, an error the loop raises
    while being stopped is raised on exit, and a loop still running `stop_grace`
    seconds after its cancel is logged with where it waits, and cancelled again.

    Raise `ValueError` unless `restart_delay`, `restart_max_delay` and `stop_grace` are
    more than 0: without a delay, a loop that fails at once would restart as fast as the
    event loop turns, and a loop slow to stop would be cancelled again and logged as
    fast, a core busy and the log flooded.
    """
    for setting, seconds in (
        ("restart_delay", restart_delay),
        ("restart_max_delay", restart_max_delay),
        ("stop_grace", stop_grace),
    ):
        if not seconds > 0:  # NaN too
            raise ValueError(
                f"background loop {name!r}: {setting} must be more than 0 seconds, not {seconds}"
            )
    task = asyncio.get_running_loop().create_task(
        _supervise(
            name,
            loop,
            restart_delay=restart_delay,
            restart_max_delay=restart_max_delay,
            healthy_after=healthy_after,
        ),
        name=name,
    )
    try:
        yield task
    finally:
        task.cancel()
        # A library can swallow a cancel (Python 3.11's wait_for, when the awaited result
        # arrives with it): say which loop and where, and ask again, rather than hang.
        while not (await asyncio.wait({task}, timeout=stop_grace))[0]:
            _log.error(
                "background loop did not stop when cancelled; cancelling it again",
                extra={"task": name, "stack": _stack(task)},
            )
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            # Ours ended as asked; re-raise only if our caller is being cancelled too.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise


async def _supervise(
    name: str,
    loop: Callable[[], Coroutine[Any, Any, None]],
    *,
    restart_delay: float,
    restart_max_delay: float,
    healthy_after: float,
) -> None:
    """Await `loop()`, and a new one after each unexpected error, until it returns.

    The loop runs on this task itself (no task of its own), so `background`'s cancel
    reaches it exactly as it did before loops were restarted.
    """
    clock = asyncio.get_running_loop()
    delay = restart_delay
    while True:
        started = clock.time()
        try:
            await loop()
            return
        except Exception:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # failed while being stopped: `background` raises it on exit
            if clock.time() - started >= healthy_after:
                delay = restart_delay
            _log.exception(
                "background loop failed; restarting it",
                extra={"task": name, "restart_in_seconds": delay},
            )
            metrics.BACKGROUND_RESTARTS.labels(name).inc()
        await asyncio.sleep(delay)  # a cancel here (shutdown) ends the task at once
        delay = min(delay * 2, restart_max_delay)


async def run_every(
    interval: float,
    job: Callable[[], Awaitable[object] | object],
    *,
    name: str,
    first_delay: float = 0.0,
) -> None:
    """Call `job` after `first_delay`, then every `interval` seconds, until cancelled.

    A failing run is logged and the loop goes on: one bad run must not stop the next.
    """
    await asyncio.sleep(first_delay)
    while True:
        stop_if_cancelled()
        try:
            result = job()
            if inspect.isawaitable(result):
                await result
        except Exception:
            stop_if_cancelled()
            _log.exception("background job failed", extra={"job": name})
        stop_if_cancelled()  # a job that swallowed the cancel must not sleep a whole interval
        await asyncio.sleep(interval)


def stop_if_cancelled() -> None:
    """Raise `CancelledError` if this task was asked to stop.

    For loops that catch errors and go on: a library can turn the cancellation into
    another error (on Python 3.11, `asyncio.wait_for` inside asyncpg's pool acquire
    reports a cancel that races its timeout as TimeoutError), and a loop that logs it
    and carries on would never stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


class Detached:
    """Work a request answers before it is done; `wait` (on shutdown) lets it finish.

    For answers whose timing must not depend on the work (S35). At most `limit` pieces
    run detached at once: past that, `submit` does the work in the caller, as if it
    were not detached, so a flood waits for PostgreSQL (and gets its errors) instead of
    piling up tasks. A detached failure is logged under the work's name, without its
    arguments, and not raised: its request has been answered. A SIGKILL loses what was
    started and not finished, a few milliseconds' worth; SIGTERM waits for it.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        """Start `work` detached and return, or do it here if `limit` pieces are running."""
        if len(self._tasks) >= self._limit:
            await work
            return
        task = asyncio.get_running_loop().create_task(self._run(work, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Return once every piece of work started so far (and by it) has ended."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    @staticmethod
    async def _run(work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await work
        except Exception:
            _log.exception("detached work failed", extra={"job": name})
