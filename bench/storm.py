"""The storm: cold logins at 4x capacity while authenticated reads go on.

Each round measures GET /v1/me alone, then again while a second wrk floods the login
endpoint with never-seen users and a probe times each login answer by status. A
service that holds the storm keeps the reads' p99 within 2x, refuses the excess
logins with fast 503s, and neither times out nor fails any other way.
"""

from __future__ import annotations

import statistics
from collections import Counter

from bench.measure import Measurement, progress, summarise
from bench.probe import ProbeResult, run_probe
from bench.scenarios import NOT_YET, Target, UserCursor
from bench.seed import PASSWORD
from bench.wrk import WrkJob, WrkResult, start_wrk

__all__ = ["PROBE_CONNECTIONS", "storm"]

PROBE_CONNECTIONS = 4


def _start(
    target: Target, script: str, args: list[str], connections: int, duration_s: float
) -> WrkJob:
    return start_wrk(
        target.server.base_url,
        script,
        args,
        connections=connections,
        duration_s=duration_s,
        threads=target.options.wrk_threads,
        timeout_s=target.options.timeout_s,
    )


def _is_server_error(status: str) -> bool:
    return status.isdigit() and 500 <= int(status) < 600 and status != "503"


def storm(
    target: Target, cursor: UserCursor, via: str, me_connections: int, storm_connections: int
) -> Measurement:
    """Run the storm rounds against `target`; reads authenticate with `via`."""
    headers = target.headers_file(via)
    if headers is None:
        return target.skip("storm", f"me-{via} {NOT_YET}")
    profile = target.options.profile
    duration = profile.duration_s
    me_args = ["/v1/me", str(headers)]
    progress(
        f"{target.name:<9} {'storm':<22} running: {storm_connections} login connections"
        f" + {PROBE_CONNECTIONS} probes vs me-{via} at {me_connections} ..."
    )
    _start(target, "get.lua", me_args, me_connections, profile.warmup_s).result()
    alone: list[WrkResult] = []
    during: list[WrkResult] = []
    logins: list[WrkResult] = []
    probe = ProbeResult()
    for _ in range(profile.rounds):
        alone.append(_start(target, "get.lua", me_args, me_connections, duration).result())
        probe_first = cursor.position
        cursor.advance(PROBE_CONNECTIONS * (int(duration / 0.02) + 2))
        login_args = [target.login_path, str(cursor.position), str(cursor.remaining), PASSWORD]
        login_job = _start(target, "login.lua", login_args, storm_connections, duration)
        me_job = _start(target, "get.lua", me_args, me_connections, duration)
        round_probe, _ = run_probe(
            target.server.host,
            target.server.port,
            target.login_path,
            first_user=probe_first,
            connections=PROBE_CONNECTIONS,
            duration_s=duration,
        )
        during.append(me_job.result())
        logins.append(login_job.result())
        cursor.advance(logins[-1].sent)
        for status, values in round_probe.latencies.items():
            probe.latencies[status].extend(values)

    measurement = summarise(target.name, "storm", during, 0.0, 0.0, 0.0, note=f"me-{via}")
    measurement.cpu_s_per_1k = measurement.db_cpu_s_per_1k = measurement.server_cores = None
    login_statuses: Counter[str] = Counter()
    login_errors: Counter[str] = Counter()
    for result in logins:
        login_statuses.update(result.statuses)
        login_errors.update({k: v for k, v in result.errors.items() if v and k != "status"})
    p99_alone = statistics.median(r.p99_ms for r in alone)
    completed = sum(r.requests for r in during)
    if not completed:  # every read timed out: wrk's percentiles are empty, not zero
        measurement.p50_ms = measurement.p99_ms = measurement.max_ms = None
    p99_storm = measurement.p99_ms
    probe_summary = probe.summary()
    all_statuses = [*login_statuses.items(), *measurement.statuses.items()]
    all_statuses += [(k, int(v["count"])) for k, v in probe_summary.items()]
    measurement.extra = {
        "me_scenario": f"me-{via}",
        "me_connections": me_connections,
        "login_connections": storm_connections,
        "me_rps_alone": round(statistics.median(r.rps for r in alone), 1),
        "me_p50_alone_ms": round(statistics.median(r.p50_ms for r in alone), 3),
        "me_p99_alone_ms": round(p99_alone, 3),
        "me_completed_storm": completed,
        "me_p99_storm_ms": None if p99_storm is None else round(p99_storm, 3),
        "me_p99_ratio": round(p99_storm / p99_alone, 2) if p99_storm and p99_alone else None,
        "login_rps": round(statistics.median(r.rps for r in logins), 1),
        "login_p50_ms": round(statistics.median(r.p50_ms for r in logins), 3),
        "login_p99_ms": round(statistics.median(r.p99_ms for r in logins), 3),
        "login_max_ms": round(max(r.max_ms for r in logins), 3),
        "login_statuses": dict(sorted(login_statuses.items())),
        "login_errors": dict(login_errors),
        "probe": probe_summary,
        "rejected_p99_ms": probe_summary.get("503", {}).get("p99_ms"),
        "non_503_5xx": sum(n for status, n in all_statuses if _is_server_error(status)),
        "timeouts": login_errors.get("timeout", 0)
        + measurement.errors.get("timeout", 0)
        + int(probe_summary.get("timeout", {}).get("count", 0)),
    }
    return target.record(measurement)
