"""Measurements: interleaved rounds, medians, and the servers' CPU per request.

The machine is shared (other people's test suites, the load generator itself), and
its free CPU changes from one minute to the next. So the sides of a comparison
(keystile, the baseline, a ceiling) are measured as *arms* of one interleaved run:
each arm warms up once (thrown away), then round 1 runs every arm back to back,
round 2 again in a rotated order, and so on. Before each round of an arm the harness
waits for the machine to go quiet (`settle`), so no arm pays for work the previous one
left queued in a server. Noise that drifts over minutes then
hits every arm alike, and the ratios the targets are about stay meaningful.

Rates and percentiles are the medians of an arm's rounds; the max latency is the max
over its rounds; counts are summed; CPU is metered around the arm's own rounds only.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.processes import machine_busy_seconds, settle, tree_cpu_seconds
from bench.wrk import WrkResult

__all__ = [
    "Arm",
    "CpuSplit",
    "Measurement",
    "SweepPoint",
    "measure_interleaved",
    "number",
    "progress",
    "summarise",
]


def number(value: float | None, digits: int = 1) -> str:
    """A figure as the report and the progress lines print it: grouped thousands, "-" for None."""
    return "-" if value is None else f"{value:,.{digits}f}"


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
    ok_rps: float | None = None  # 2xx answers per second: what a login scenario served
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


@dataclass(frozen=True)
class Arm:
    """One side of an interleaved scenario: a target, and how to run one round of it."""

    target: str
    scenario: str
    run: Callable[[float], WrkResult]
    cpu_seconds: Callable[[], float]  # CPU spent so far by this side's own processes
    in_process: bool = False  # True: the work runs inside the harness (the hash ceiling)
    note: str = ""
    prepare: Callable[[], None] | None = None  # per-round setup, outside the metering
    hashing: Callable[[], tuple[float, int] | None] | None = None  # see CpuSplit.hashing


@dataclass
class CpuSplit:
    """Where the CPU went while measured work ran, summed over each time it ran.

    *server*: the target's own process tree; one entry per store (PostgreSQL, Redis);
    *load generator*: this process and the children it has waited for (wrk, the burst's
    clients, the storm's probe); *other*: everything else the machine was busy with.
    With `hashing` (keystile's hashing CPU seconds and hashes so far, from its metrics),
    *hashing* is the part of *server* its hashing threads spent, and `cpu_per_hash_ms`
    what one hash cost: beside the hash ceiling's, what sharing the cores costs a hash.
    """

    server_cpu: Callable[[], float]  # CPU spent so far by the target's processes
    db_pids: tuple[int, ...]
    db_names: tuple[str, ...] = ()
    in_process: bool = False  # True: the work runs inside the harness (the hash ceiling)
    hashing: Callable[[], tuple[float, int] | None] | None = None
    server_s: float = 0.0
    db_s: float = 0.0
    load_s: float = 0.0
    other_s: float = 0.0
    elapsed_s: float = 0.0
    per_store_s: dict[str, float] = field(default_factory=dict)
    hashing_s: float = 0.0
    hashes: int = 0

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Meter the block: add what each side spent in it to the sums."""
        # Read the metrics outside the server's metered CPU: answering them costs some.
        hashing0 = self.hashing() if self.hashing else None
        cpu0, db0 = self.server_cpu(), tree_cpu_seconds(self.db_pids)
        store0 = [tree_cpu_seconds((pid,)) for pid in self.db_pids]
        harness0, busy0, started = _harness_cpu_seconds(), machine_busy_seconds(), time.monotonic()
        yield
        cpu = self.server_cpu() - cpu0
        # Database backends that exit take their CPU along: never let that go negative.
        db = max(0.0, tree_cpu_seconds(self.db_pids) - db0)
        harness = _harness_cpu_seconds() - harness0
        busy = machine_busy_seconds() - busy0
        for name, pid, before in zip(self.db_names, self.db_pids, store0, strict=False):
            spent = max(0.0, tree_cpu_seconds((pid,)) - before)
            self.per_store_s[name] = self.per_store_s.get(name, 0.0) + spent
        self.load_s += harness if not self.in_process else 0.0
        self.server_s += cpu
        self.db_s += db
        self.other_s += max(0.0, busy - db - harness - (0.0 if self.in_process else cpu))
        self.elapsed_s += time.monotonic() - started
        hashing1 = self.hashing() if self.hashing else None
        if hashing0 is not None and hashing1 is not None:
            self.hashing_s += hashing1[0] - hashing0[0]
            self.hashes += hashing1[1] - hashing0[1]

    @property
    def cpu_per_hash_ms(self) -> float | None:
        """CPU milliseconds one hash took on the server's hashing threads, if measured."""
        return round(1000 * self.hashing_s / self.hashes, 1) if self.hashes else None

    def summary(self) -> dict[str, Any]:
        """The measurement's `extra` entries: the split in cores and, if measured, a hash's CPU."""
        per_hash = self.cpu_per_hash_ms
        return {
            "cpu_split": self.cores(),
            **({"cpu_per_hash_ms": per_hash} if per_hash is not None else {}),
        }

    def cores(self) -> dict[str, float]:
        """The sums as cores busy on average while the metered blocks ran."""
        elapsed = max(self.elapsed_s, 1e-6)
        hashing = {"hashing": round(self.hashing_s / elapsed, 2)} if self.hashes else {}
        return {
            "server": round(self.server_s / elapsed, 2),
            **hashing,
            **{name: round(spent / elapsed, 2) for name, spent in self.per_store_s.items()},
            "load generator": round(self.load_s / elapsed, 2),
            "other": round(self.other_s / elapsed, 2),
        }


@dataclass
class _Tally:
    cpu: CpuSplit
    results: list[WrkResult] = field(default_factory=list)
    settled_s: float = 0.0  # waited before its rounds for the previous arm's work to end


def _rotated(arms: list[Arm], round_index: int) -> list[Arm]:
    shift = round_index % len(arms)
    return arms[shift:] + arms[:shift]


def measure_interleaved(
    arms: list[Arm],
    *,
    warmup_s: float,
    duration_s: float,
    rounds: int,
    db_pids: tuple[int, ...],
    db_names: tuple[str, ...] = (),
    quiet: bool = False,
) -> list[Measurement]:
    """Warm every arm up, then run `rounds` rounds of all arms; one `Measurement` per arm."""
    for arm in arms:
        if not quiet:
            progress(f"{arm.target:<9} {arm.scenario:<22} running ...")
        if warmup_s > 0:
            if arm.prepare is not None:
                arm.prepare()
            arm.run(warmup_s)
    tallies = {
        id(arm): _Tally(
            CpuSplit(arm.cpu_seconds, db_pids, db_names, arm.in_process, hashing=arm.hashing)
        )
        for arm in arms
    }
    for round_index in range(rounds):
        for arm in _rotated(arms, round_index):
            tally = tallies[id(arm)]
            if arm.prepare is not None:
                arm.prepare()
            tally.settled_s += settle()
            with tally.cpu.measuring():
                tally.results.append(arm.run(duration_s))
    measurements = []
    for arm in arms:
        tally = tallies[id(arm)]
        wall = sum(r.duration_s for r in tally.results)
        cpu = tally.cpu
        measurement = summarise(
            arm.target, arm.scenario, tally.results, cpu.server_s, cpu.db_s, wall, note=arm.note
        )
        measurement.other_cores = cpu.other_s / max(cpu.elapsed_s, 1e-6)
        # Where the CPU went while this arm ran, in cores: the next gap shows itself here.
        measurement.extra.update(cpu.summary())
        measurement.extra["settled_s"] = round(tally.settled_s, 1)
        requests = sum(r.requests for r in tally.results)
        if arm.in_process and requests:
            # The hash ceiling: every request is one hash and the harness's CPU is the hashes'.
            measurement.extra["cpu_per_hash_ms"] = round(1000 * cpu.server_s / requests, 1)
        measurements.append(measurement)
    return measurements


def _ok_share(result: WrkResult) -> float:
    answered = sum(result.statuses.values())
    ok = sum(n for status, n in result.statuses.items() if str(status).startswith("2"))
    return ok / answered if answered else 0.0


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
        ok_rps=_median([r.rps * _ok_share(r) for r in results]),
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
