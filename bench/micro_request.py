"""Micro-benchmarks of what each request pays beside its handler, one line per item.

    .venv/bin/python -m bench.micro_request

Prints microseconds of CPU per call (best of five runs, `time.process_time`):

- keystile's default response headers (`default_cache_headers`: Cache-Control,
  X-Content-Type-Options, and Vary on a response that depends on credentials);
- one request log line as a worker writes it (JSON, to a file);
- a request's Prometheus updates in multiprocess mode, as `keystile serve` runs them;
- for comparison, two things the framework does per request that keystile does not own:
  Hypercorn restarts a keep-alive idle task (an `asyncio.wait_for` in a new task, then
  cancelled) and Quart sends each response under `asyncio.wait_for(..., 60)`.

Figures from one machine say what is worth changing; they are no substitute for
`make bench`, and `bench.profile_me` shows where a server's time goes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_RUNS = 5


def _best_us(call: Callable[[], object], number: int) -> float:
    best = float("inf")
    for _ in range(_RUNS):
        started = time.process_time()
        for _ in range(number):
            call()
        best = min(best, (time.process_time() - started) / number)
    return best * 1e6


def _line(label: str, micros: float) -> None:
    sys.stdout.write(f"{label:<58} {micros:6.2f} us\n")


async def _headers(number: int) -> None:
    from quart import Quart, Response

    from keystile.web.caching import default_cache_headers
    from keystile.web.context import request_state

    def response() -> Response:
        return Response("{}", content_type="application/json")

    bare = _best_us(response, number)  # net of building the response
    app = Quart(__name__)
    async with app.test_request_context("/v1/me"):
        for dependent in (False, True):
            request_state().auth_dependent = dependent

            def fresh() -> None:
                default_cache_headers(response())

            label = "default headers, credential-dependent" if dependent else "default headers"
            _line(label, _best_us(fresh, number) - bare)


def _request_log(number: int, directory: Path) -> None:
    from keystile.logs import configure_logging

    saved = sys.stderr
    with (directory / "requests.log").open("w") as sink:
        sys.stderr = sink
        try:
            configure_logging("info", "json")
            log = logging.getLogger("keystile.request")
            extra = {
                "request_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                "method": "GET",
                "route": "/v1/me",
                "status": 200,
                "duration_ms": 1.234,
                "user_id": "5b1c6f0e-3c1e-4a8e-9f1e-2d3c4b5a6978",
                "client": "127.0.0.1",
            }
            per_line = _best_us(lambda: log.info("request", extra=extra), number)
            _line("request log line (JSON, to a file)", per_line)
        finally:
            sys.stderr = saved
            logging.getLogger().handlers.clear()


def _metrics(number: int) -> None:
    from keystile import metrics

    duration = metrics.request_duration("GET", "/v1/me", "200")
    in_progress = metrics.HTTP_REQUESTS_IN_PROGRESS
    lookups = metrics.CACHE_LOOKUPS.labels("users", "local_hit")

    def request_updates() -> None:
        in_progress.inc()
        duration.observe(0.0012)
        lookups.inc()
        lookups.inc()
        in_progress.dec()

    _line("Prometheus updates of one GET /v1/me (multiprocess)", _best_us(request_updates, number))


async def _framework(number: int) -> None:
    terminated = asyncio.Event()

    async def idle() -> None:
        await asyncio.wait_for(terminated.wait(), 5)

    async def body() -> None:
        return None

    async def restarts() -> float:
        best = float("inf")
        for _ in range(_RUNS):
            started = time.process_time()
            for _ in range(number):
                task = asyncio.create_task(idle())
                await asyncio.sleep(0)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            best = min(best, (time.process_time() - started) / number)
        return best * 1e6

    async def sends(limit: float | None) -> float:
        best = float("inf")
        for _ in range(_RUNS):
            started = time.process_time()
            for _ in range(number):
                await asyncio.wait_for(body(), limit)
            best = min(best, (time.process_time() - started) / number)
        return best * 1e6

    _line("Hypercorn: idle task started and cancelled (framework)", await restarts())
    _line("Quart: response sent under wait_for(..., 60) (framework)", await sends(60))
    _line("  the same send with no timeout", await sends(None))


def main(number: int = 20_000) -> None:
    """Print each item's cost per call."""
    import uvloop

    with tempfile.TemporaryDirectory(prefix="keystile-micro-") as work:
        # Before keystile.metrics is imported: the values then live in mmap files.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = work
        asyncio.run(_headers(number))
        _request_log(number, Path(work))
        _metrics(number)
        uvloop.run(_framework(number // 4))


if __name__ == "__main__":
    main()
