"""The storm: cold logins at 4x capacity while authenticated reads go on.

Each round measures GET /v1/me alone, then again while a second wrk floods the login
endpoint with never-seen users and a probe times each login answer by status. A
service that holds the storm keeps the reads' p99 within 2x, refuses the excess
logins with fast 503s, and neither times out nor fails any other way. The rounds of
keystile and the baseline alternate, like every other interleaved scenario.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import CpuSplit, Measurement, progress, summarise
from bench.probe import ProbeResult, run_probe
from bench.processes import settle
from bench.scenarios import NOT_YET, Target, UserCursor
from bench.seed import PASSWORD
from bench.wrk import WrkResult

__all__ = ["PROBE_CONNECTIONS", "storm_interleaved"]

PROBE_CONNECTIONS = 8
_PROBE_PAUSE_S = 0.05


@dataclass
class _Side:
    """One target's storm rounds."""

    target: Target
    headers: Path
    cpu: CpuSplit  # metered while the storm runs, not while the reads run alone
    alone: list[WrkResult] = field(default_factory=list)
    during: list[WrkResult] = field(default_factory=list)
    logins: list[WrkResult] = field(default_factory=list)
    probe: ProbeResult = field(default_factory=ProbeResult)

    def round(
        self, cursor: UserCursor, me_connections: int, storm_connections: int, duration: float
    ) -> None:
        target = self.target
        target.server.settle()
        me_args = ["/v1/me", str(self.headers)]
        self.alone.append(target.start("get.lua", me_args, me_connections, duration).result())
        probe_first = cursor.position
        cursor.advance(PROBE_CONNECTIONS * (int(duration / _PROBE_PAUSE_S) + 2))
        # Storm clients do not wait for Retry-After: they retry at once, the worst case.
        wrk_threads = str(target.options.wrk_threads)
        login_args = [
            target.login_path,
            str(cursor.position),
            str(cursor.remaining),
            PASSWORD,
            wrk_threads,
        ]
        with self.cpu.measuring():
            login_job = target.start("login.lua", login_args, storm_connections, duration)
            me_job = target.start("get.lua", me_args, me_connections, duration)
            probe, _ = run_probe(
                target.server.host,
                target.server.port,
                target.login_path,
                first_user=probe_first,
                connections=PROBE_CONNECTIONS,
                duration_s=duration,
                pause_s=_PROBE_PAUSE_S,
            )
            self.during.append(me_job.result())
            self.logins.append(login_job.result())
        waited = target.server.settle()
        if waited > 1:
            progress(f"{target.name:<9} storm round: {waited:.1f} s to work off queued requests")
        cursor.advance(self.logins[-1].sent)
        for status, values in probe.latencies.items():
            self.probe.latencies[status].extend(values)


def _is_server_error(status: str) -> bool:
    return status.isdigit() and 500 <= int(status) < 600 and status != "503"


def _summary(side: _Side, via: str, me_connections: int, storm_connections: int) -> Measurement:
    measurement = summarise(side.target.name, "storm", side.during, 0.0, 0.0, 0.0, note=f"me-{via}")
    measurement.cpu_s_per_1k = measurement.db_cpu_s_per_1k = measurement.server_cores = None
    login_statuses: Counter[str] = Counter()
    login_errors: Counter[str] = Counter()
    for result in side.logins:
        login_statuses.update(result.statuses)
        login_errors.update({k: v for k, v in result.errors.items() if v and k != "status"})
    p50_alone = statistics.median(r.p50_ms for r in side.alone)
    p99_alone = statistics.median(r.p99_ms for r in side.alone)
    completed = sum(r.requests for r in side.during)
    p99_storm = measurement.p99_ms
    probe_summary = side.probe.summary()
    all_statuses = [*login_statuses.items(), *measurement.statuses.items()]
    all_statuses += [(k, int(v["count"])) for k, v in probe_summary.items()]
    measurement.extra = {
        "me_scenario": f"me-{via}",
        "me_connections": me_connections,
        "login_connections": storm_connections,
        "me_rps_alone": round(statistics.median(r.rps for r in side.alone), 1),
        "me_p50_alone_ms": round(p50_alone, 3),
        "me_p99_alone_ms": round(p99_alone, 3),
        "me_completed_storm": completed,
        "me_p50_storm_ms": measurement.p50_ms,
        "me_p99_storm_ms": None if p99_storm is None else round(p99_storm, 3),
        "me_p99_ratio": round(p99_storm / p99_alone, 2) if p99_storm and p99_alone else None,
        "login_rps": round(statistics.median(r.rps for r in side.logins), 1),
        "login_p50_ms": round(statistics.median(r.p50_ms for r in side.logins), 3),
        "login_p99_ms": round(statistics.median(r.p99_ms for r in side.logins), 3),
        "login_max_ms": round(max(r.max_ms for r in side.logins), 3),
        "login_statuses": dict(sorted(login_statuses.items())),
        "login_errors": dict(login_errors),
        "probe": probe_summary,
        "rejected_p99_ms": probe_summary.get("503", {}).get("p99_ms"),
        "non_503_5xx": sum(n for status, n in all_statuses if _is_server_error(status)),
        "timeouts": login_errors.get("timeout", 0)
        + measurement.errors.get("timeout", 0)
        + int(probe_summary.get("timeout", {}).get("count", 0)),
        **side.cpu.summary(),
    }
    return measurement


def storm_interleaved(
    targets: list[Target],
    cursor: UserCursor,
    via: str,
    me_connections: int,
    storm_connections: int,
    *,
    db_pids: tuple[int, ...],
    db_names: tuple[str, ...],
) -> list[Measurement]:
    """Run the storm's rounds on every target in turn; one `Measurement` per target."""
    results: list[Measurement] = []
    sides: list[_Side] = []
    for target in targets:
        headers = target.headers_file(via)
        if headers is None:
            results.append(target.skip("storm", f"me-{via} {NOT_YET}"))
        else:
            sides.append(_Side(target, headers, target.cpu_split(db_pids, db_names)))
    if not sides:
        return results
    profile = targets[0].options.profile
    for side in sides:
        progress(
            f"{side.target.name:<9} {'storm':<22} running: {storm_connections} login connections"
            f" + {PROBE_CONNECTIONS} probes vs me-{via} at {me_connections} ..."
        )
        side.target.start(
            "get.lua", ["/v1/me", str(side.headers)], me_connections, profile.warmup_s
        ).result()
    for round_index in range(profile.rounds):
        shift = round_index % len(sides)
        for side in sides[shift:] + sides[:shift]:
            settle()
            side.round(cursor, me_connections, storm_connections, profile.duration_s)
    return results + [_summary(side, via, me_connections, storm_connections) for side in sides]
