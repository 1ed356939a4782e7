"""Measurements: a warm-up, several rounds, medians, and the servers' CPU per request.

Each scenario is run once to warm up (connections, caches, JIT-free but lazy imports)
and that run is thrown away; then `rounds` runs are kept. Rates and percentiles are
the medians of the rounds (robust to one noisy round on a shared machine); the max
latency is the max over all rounds; counts are summed.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.processes import CpuMeter, machine_busy_seconds
from bench.wrk import WrkResult

__all__ = ["Measurement", "SweepPoint", "measure_rounds", "progress"]


def progress(line: str) -> None:
    """Print one progress line for a person watching the run."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {line}\n")
    sys.stderr.flush()


@dataclass
class Measurement:
    """One scenario against one target, or the reason it was skipped."""

    target: str
    scenario: str
    connections: int | None = None
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    cpu_s_per_1k: float | None = None
    db_cpu_s_per_1k: float | None = None
    server_cores: float | None = None
    other_cores: float | None = None  # CPU used by anything but servers, db and load generator
    skipped: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.target, self.scenario

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """A one-line summary for the progress output."""
        if self.skipped:
            return f"{self.target:<9} {self.scenario:<22} skipped: {self.skipped}"
        parts = [f"{self.target:<9} {self.scenario:<22}", f"{self.rps or 0:>9.1f} req/s"]
        if self.p50_ms is not None:
            parts.append(f"p50 {self.p50_ms:7.2f} ms  p99 {self.p99_ms or 0:8.2f} ms")
        bad = {k: v for k, v in self.statuses.items() if not k.startswith("2")}
        if bad or self.errors:
            parts.append(f"non-2xx {bad} errors {self.errors}")
        return "  ".join(parts)


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One connection count of a latency-vs-concurrency sweep."""

    target: str
    scenario: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float


def _harness_cpu_seconds() -> float:
    """CPU of this process plus its finished children (each wrk run, once waited for)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def measure_rounds(
    target: str,
    scenario: str,
    run: Callable[[float], WrkResult],
    *,
    warmup_s: float,
    duration_s: float,
    rounds: int,
    server_pids: tuple[int, ...],
    db_pids: tuple[int, ...],
    note: str = "",
) -> Measurement:
    """Warm up with `run(warmup_s)`, then keep `rounds` runs of `run(duration_s)`."""
    if warmup_s > 0:
        run(warmup_s)
    server_cpu, db_cpu = CpuMeter(server_pids), CpuMeter(db_pids)
    results: list[WrkResult] = []
    wall = 0.0
    busy_before, started = machine_busy_seconds(), time.monotonic()
    harness_before = _harness_cpu_seconds()
    for meter in (server_cpu, db_cpu):
        meter.start()
    for _ in range(rounds):
        results.append(run(duration_s))
        wall += results[-1].duration_s
    cpu_s, db_s = server_cpu.stop(), db_cpu.stop()
    harness_s = _harness_cpu_seconds() - harness_before
    other = machine_busy_seconds() - busy_before - cpu_s - db_s - harness_s
    measurement = summarise(target, scenario, results, cpu_s, db_s, wall, note=note)
    measurement.other_cores = max(0.0, other) / max(time.monotonic() - started, 1e-6)
    return measurement


def summarise(
    target: str,
    scenario: str,
    results: list[WrkResult],
    cpu_s: float,
    db_cpu_s: float,
    wall_s: float,
    *,
    note: str = "",
) -> Measurement:
    """Fold rounds into one `Measurement` (medians, summed counts, CPU per 1000 requests)."""
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for result in results:
        statuses.update(result.statuses)
        errors.update({k: v for k, v in result.errors.items() if v and k != "status"})
    requests = sum(r.requests for r in results)
    # A round in which nothing completed has no latencies (wrk reports zeros): leave it out.
    timed = [r for r in results if r.requests]
    return Measurement(
        target=target,
        scenario=scenario,
        connections=results[0].connections,
        rps=_median([r.rps for r in results]),
        p50_ms=_median([r.p50_ms for r in timed]) if timed else None,
        p99_ms=_median([r.p99_ms for r in timed]) if timed else None,
        max_ms=max(r.max_ms for r in timed) if timed else None,
        requests=requests,
        statuses=dict(sorted(statuses.items())),
        errors=dict(errors),
        cpu_s_per_1k=cpu_s / requests * 1000 if requests else None,
        db_cpu_s_per_1k=db_cpu_s / requests * 1000 if requests else None,
        server_cores=cpu_s / wall_s if wall_s > 0 else None,
        note=note,
        rounds=[r.to_dict() for r in results],
    )
