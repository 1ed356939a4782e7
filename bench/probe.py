"""A login probe that times every answer by status, for the storm scenario.

wrk reports one latency histogram for all answers; the storm needs the latency of
the 503s alone (an overloaded login must be refused in < 50 ms, not queued). So a
few probe connections send their share of the storm's cold logins and time each
answer themselves. They are a small part of the load, paced so as not to hog a core.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

from bench.seed import PASSWORD, email_of

__all__ = ["ProbeResult", "read_answer", "run_probe"]


@dataclass
class ProbeResult:
    """Latencies in milliseconds, by status ("timeout" and "error" for no answer)."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def percentile(self, status: str, fraction: float) -> float | None:
        values = sorted(self.latencies.get(status, []))
        if not values:
            return None
        return values[min(len(values) - 1, int(fraction * len(values)))]

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            status: {
                "count": len(values),
                "p50_ms": round(self.percentile(status, 0.50) or 0.0, 3),
                "p99_ms": round(self.percentile(status, 0.99) or 0.0, 3),
                "max_ms": round(max(values), 3),
            }
            for status, values in sorted(self.latencies.items())
        }


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Read one HTTP/1.1 response; return its status and headers (names lower-cased).

    Without Content-Length the body runs to the end of the connection, which is read.
    """
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in {b"\r\n", b"\n", b""}:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        await reader.read()
        headers["connection"] = "close"
    else:
        await reader.readexactly(int(headers["content-length"]))
    return status, headers


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the server keeps the socket."""
    status, headers = await read_answer(reader)
    return status, "close" not in headers.get("connection", "").lower()


async def _prober(
    host: str, port: int, path: str, users: range, stop_at: float, pause_s: float, out: ProbeResult
) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    for index in users:
        if time.monotonic() >= stop_at:
            break
        body = json.dumps({"email": email_of(index), "password": PASSWORD}).encode()
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            writer.write(request)
            status, keep = await asyncio.wait_for(_read_answer(reader), timeout=5.0)
            out.latencies[str(status)].append((time.perf_counter() - started) * 1000)
        except TimeoutError:
            out.latencies["timeout"].append((time.perf_counter() - started) * 1000)
            keep = False
        except (OSError, ConnectionError, ValueError, IndexError, asyncio.IncompleteReadError):
            out.latencies["error"].append((time.perf_counter() - started) * 1000)
            keep = False
        if not keep and writer is not None:
            writer.close()
            writer = None
        await asyncio.sleep(pause_s)
    if writer is not None:
        writer.close()


def run_probe(
    host: str,
    port: int,
    path: str,
    *,
    first_user: int,
    connections: int,
    duration_s: float,
    pause_s: float = 0.02,
) -> tuple[ProbeResult, int]:
    """Probe for `duration_s`; return the result and how many user indexes it may have used."""
    per_connection = int(duration_s / pause_s) + 1
    result = ProbeResult()

    async def _all() -> None:
        stop_at = time.monotonic() + duration_s
        await asyncio.gather(
            *(
                _prober(
                    host,
                    port,
                    path,
                    range(first_user + n * per_connection, first_user + (n + 1) * per_connection),
                    stop_at,
                    pause_s,
                    result,
                )
                for n in range(connections)
            )
        )

    asyncio.run(_all())
    return result, per_connection * connections
