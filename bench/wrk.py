"""Drive wrk (the load generator) and read back the JSON line our Lua scripts print.

wrk is closed-loop: each connection keeps exactly one request in flight, over
keep-alive, so the offered load is set by the connection count. Every script in
`bench/lua/` prints one `BENCH_JSON {...}` line from `done()` with latency
percentiles, answers by status and wrk's socket errors, which this module parses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LUA_DIR", "WrkError", "WrkJob", "WrkResult", "require_wrk", "run_wrk", "start_wrk"]

LUA_DIR = Path(__file__).resolve().parent / "lua"
_MARKER = "BENCH_JSON "


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no summary line."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: counts, latency in milliseconds, answers by status, socket errors."""

    connections: int
    duration_s: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0

    @property
    def rps(self) -> float:
        """Completed requests per second over the run (any status)."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def timeouts(self) -> int:
        return self.errors.get("timeout", 0)

    def count(self, predicate: Any) -> int:
        """Sum the answers whose integer status satisfies `predicate`."""
        return sum(n for status, n in self.statuses.items() if predicate(int(status)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
            "statuses": dict(sorted(self.statuses.items())),
            "errors": {k: v for k, v in self.errors.items() if v},
            "sent": self.sent,
        }


def require_wrk() -> str:
    """Return wrk's path or raise with the one command that installs it."""
    path = shutil.which("wrk")
    if path is None:
        raise WrkError(
            "wrk is not installed: apt-get install -y wrk (make bench does this as root)"
        )
    return path


@dataclass
class WrkJob:
    """A wrk run in progress; `result()` waits for it."""

    process: subprocess.Popen[str]
    connections: int
    command: list[str]

    def result(self) -> WrkResult:
        """Wait for wrk to finish and parse its summary line."""
        stdout, stderr = self.process.communicate()
        if self.process.returncode != 0:
            raise WrkError(
                f"wrk exited {self.process.returncode}: {stderr.strip() or stdout[-500:]}"
            )
        return parse_output(stdout, self.connections)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def start_wrk(
    url: str,
    script: str,
    args: list[str],
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 5.0,
) -> WrkJob:
    """Start wrk against `url` with `bench/lua/<script>` and its positional args."""
    threads = max(1, min(threads, connections))
    command = [
        require_wrk(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        f"--script={LUA_DIR / script}",
        url,
        "--",
        *args,
        str(threads),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=LUA_DIR
    )
    return WrkJob(process, connections, command)


def run_wrk(
    url: str,
    script: str,
    args: list[str],
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 5.0,
) -> WrkResult:
    """Run wrk to completion; see `start_wrk`."""
    return start_wrk(
        url,
        script,
        args,
        connections=connections,
        duration_s=duration_s,
        threads=threads,
        timeout_s=timeout_s,
    ).result()


def parse_output(stdout: str, connections: int) -> WrkResult:
    """Parse the `BENCH_JSON` line of wrk's output (latencies there are microseconds)."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(_MARKER)), None)
    if line is None:
        raise WrkError(f"wrk printed no {_MARKER.strip()} line:\n{stdout[-1000:]}")
    data = json.loads(line[len(_MARKER) :])
    latency = data["latency_us"]
    ms = 1000.0
    return WrkResult(
        connections=connections,
        duration_s=float(data["duration_us"]) / 1e6,
        requests=int(data["requests"]),
        p50_ms=float(latency["p50"]) / ms,
        p90_ms=float(latency["p90"]) / ms,
        p99_ms=float(latency["p99"]) / ms,
        max_ms=float(latency["max"]) / ms,
        mean_ms=float(latency["mean"]) / ms,
        statuses={str(k): int(v) for k, v in data["statuses"].items()},
        errors={str(k): int(v) for k, v in data["errors"].items()},
        sent=int(data.get("sent", 0)),
    )
