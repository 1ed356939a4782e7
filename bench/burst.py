"""The burst: N cold logins of N distinct users arrive at once, and every client retries.

Each client opens its own connection; once all are open, every request is written
together. A client told 503 waits what Retry-After says and tries again on a new
connection, until it succeeds. N is 8 seconds of the measured hash capacity, so a
service that serves at the hash ceiling drains it in about 8 s. Reported: when the
last login succeeded, served logins/s over that time (against the hash ceiling), the
503s and how fast they came, timeouts, the most retries one client needed, and the
latency of the 200s. The success times are kept for the plot.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from bench.measure import CpuSplit, Measurement, number, progress
from bench.probe import read_answer
from bench.processes import settle
from bench.scenarios import Target, UserCursor
from bench.seed import PASSWORD, email_of

__all__ = ["BurstResult", "burst_measurement", "run_burst"]

BURST_SECONDS_OF_CAPACITY = 8
_ANSWER_TIMEOUT_S = 30.0
_GIVE_UP_S = 180.0


@dataclass
class BurstResult:
    """What happened to every client of one burst."""

    size: int
    success_at_s: list[float] = field(default_factory=list)  # since the burst was written
    success_ms: list[float] = field(default_factory=list)  # latency of each successful try
    refused_ms: list[float] = field(default_factory=list)  # latency of each 503
    retry_after_s: list[int] = field(default_factory=list)
    retries: list[int] = field(default_factory=list)  # per client that finished
    timeouts: int = 0
    errors: dict[str, int] = field(default_factory=dict)


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _client(
    host: str,
    port: int,
    path: str,
    user: int,
    opened: asyncio.Event,
    go: asyncio.Event,
    ready: list[int],
    started: list[float],
    out: BurstResult,
) -> None:
    body = json.dumps({"email": email_of(user), "password": PASSWORD}).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, TimeoutError) as exc:  # opened again when it is its turn to send
        out.errors[f"open: {type(exc).__name__}"] = out.errors.get("open", 0) + 1
    finally:
        ready[0] -= 1
        if ready[0] == 0:
            opened.set()
    await go.wait()
    retries = 0
    while time.monotonic() - started[0] < _GIVE_UP_S:
        sent = time.perf_counter()
        try:
            if writer is None or reader is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status, headers = await asyncio.wait_for(read_answer(reader), _ANSWER_TIMEOUT_S)
        except TimeoutError:
            out.timeouts += 1
            status, headers = 0, {}
        except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError) as exc:
            out.errors[type(exc).__name__] = out.errors.get(type(exc).__name__, 0) + 1
            status, headers = 0, {}
        elapsed_ms = (time.perf_counter() - sent) * 1000
        if writer is not None:
            writer.close()
        writer = None
        if 200 <= status < 300:
            out.success_at_s.append(time.monotonic() - started[0])
            out.success_ms.append(elapsed_ms)
            out.retries.append(retries)
            return
        retries += 1
        wait = 1.0
        if status == 503:
            out.refused_ms.append(elapsed_ms)
            wait = float(headers.get("retry-after", "1"))
            out.retry_after_s.append(int(wait))
        elif status:
            out.errors[str(status)] = out.errors.get(str(status), 0) + 1
        await asyncio.sleep(wait)


def run_burst(
    target: Target,
    cursor: UserCursor,
    size: int,
    db_pids: tuple[int, ...],
    db_names: tuple[str, ...],
) -> tuple[BurstResult, CpuSplit]:
    """Send `size` cold logins at once to `target`; return when every client succeeded.

    The machine settles first, outside the CPU meter; the split returned is metered
    while the burst ran (`db_pids` and `db_names` are the stores', as `CpuSplit` takes).
    """
    target.server.settle()
    settle()
    cpu = target.cpu_split(db_pids, db_names)
    with cpu.measuring():
        result = _send(target, cursor, size)
    return result, cpu


def _send(target: Target, cursor: UserCursor, size: int) -> BurstResult:
    result = BurstResult(size)
    first = cursor.position
    cursor.advance(size)

    async def _all() -> None:
        opened, go = asyncio.Event(), asyncio.Event()
        ready, started = [size], [0.0]
        clients = [
            asyncio.ensure_future(
                _client(
                    target.server.host,
                    target.server.port,
                    target.login_path,
                    first + n,
                    opened,
                    go,
                    ready,
                    started,
                    result,
                )
            )
            for n in range(size)
        ]
        await opened.wait()
        started[0] = time.monotonic()
        go.set()
        await asyncio.wait_for(asyncio.gather(*clients), _GIVE_UP_S + 60)

    asyncio.run(_all())
    return result


def burst_measurement(target: Target, result: BurstResult, hash_ceiling_rps: float) -> Measurement:
    """Summarise one burst as a `Measurement` (extra: the burst's own figures)."""
    served = len(result.success_at_s)
    drained_s = max(result.success_at_s) if result.success_at_s else None
    rate = served / drained_s if drained_s else None
    measurement = Measurement(
        target.name,
        "burst",
        connections=result.size,
        rps=rate,
        p50_ms=_percentile(result.success_ms, 0.5),
        p99_ms=_percentile(result.success_ms, 0.99),
        max_ms=max(result.success_ms) if result.success_ms else None,
        requests=served + len(result.refused_ms),
        statuses={"2xx": served, "503": len(result.refused_ms), **result.errors},
        note=f"{result.size} cold logins at once, clients honour Retry-After",
    )
    extra: dict[str, Any] = {
        "size": result.size,
        "served": served,
        "all_served": served == result.size,
        "drained_s": None if drained_s is None else round(drained_s, 2),
        "served_per_s": None if rate is None else round(rate, 1),
        "ceiling_ratio": round(rate / hash_ceiling_rps, 3) if rate and hash_ceiling_rps else None,
        "refused": len(result.refused_ms),
        "refused_p50_ms": _percentile(result.refused_ms, 0.5),
        "refused_p99_ms": _percentile(result.refused_ms, 0.99),
        "retry_after_spread_s": sorted(set(result.retry_after_s)),
        "max_retries": max(result.retries) if result.retries else None,
        "median_retries": statistics.median(result.retries) if result.retries else None,
        "timeouts": result.timeouts,
        "success_at_s": [round(t, 3) for t in sorted(result.success_at_s)],
    }
    measurement.extra = extra
    progress(
        f"{target.name:<9} {'burst':<22} {served}/{result.size} served in "
        f"{extra['drained_s']} s ({extra['served_per_s']}/s, {extra['ceiling_ratio']} x ceiling);"
        f" 503 x {extra['refused']} p99 {number(extra['refused_p99_ms'], 0)} ms;"
        f" retries max {extra['max_retries']}; timeouts {result.timeouts};"
        f" 200 p50 / p99 {number(measurement.p50_ms, 0)} / {number(measurement.p99_ms, 0)} ms"
    )
    return measurement
