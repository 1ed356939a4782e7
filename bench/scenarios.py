"""The HTTP scenarios of BENCHMARK.md, run against one server at a time.

Every scenario is a wrk run (bench/lua/*.lua) at a fixed connection count, measured
by `measure_rounds`. Scenarios that need an endpoint the server does not have yet
(bearer tokens, refresh) are recorded as skipped with the reason, and light up by
themselves once the endpoint answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.credentials import Client, CredentialError
from bench.measure import Measurement, SweepPoint, measure_rounds, progress
from bench.options import Options
from bench.processes import ServerProcess
from bench.seed import PASSWORD
from bench.wrk import WrkResult, run_wrk

__all__ = ["Target", "UserCursor"]

WARM_USERS = 8  # login-warm cycles through this many accounts
CREDENTIAL_USERS = 16  # me-* rotate through this many logged-in accounts
NOT_YET = "not available yet"


class UserCursor:
    """Hands out seeded users that have never logged in, so cold logins stay cold."""

    def __init__(self, first: int, stored: int) -> None:
        self.position = first
        self.stored = stored

    @property
    def remaining(self) -> int:
        return max(1, self.stored - self.position)

    def advance(self, used: int) -> None:
        self.position = min(self.stored, self.position + used)


@dataclass
class Target:
    """A running server and the scenarios that can be run against it."""

    name: str
    server: ServerProcess
    options: Options
    work_dir: Path
    login_path: str
    db_pids: tuple[int, ...]
    results: list[Measurement] = field(default_factory=list)
    sweeps: list[SweepPoint] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = Client(self.server.host, self.server.port)
        self.has_sessions = self.client.has_route("/v1/sessions")
        self.has_tokens = self.client.has_route("/v1/tokens")
        self.has_refresh = self.client.has_route("/v1/tokens/refresh")
        self._headers: dict[str, Path | None] = {}

    # --- plumbing -----------------------------------------------------------------

    def record(self, measurement: Measurement) -> Measurement:
        self.results.append(measurement)
        progress(measurement.line())
        return measurement

    def skip(self, scenario: str, reason: str) -> Measurement:
        return self.record(Measurement(self.name, scenario, skipped=reason))

    def _measure(
        self, scenario: str, run: Callable[[float], WrkResult], *, note: str = ""
    ) -> Measurement:
        profile = self.options.profile
        progress(f"{self.name:<9} {scenario:<22} running ...")
        return self.record(
            measure_rounds(
                self.name,
                scenario,
                run,
                warmup_s=profile.warmup_s,
                duration_s=profile.duration_s,
                rounds=profile.rounds,
                server_pids=(self.server.pid,),
                db_pids=self.db_pids,
                note=note,
            )
        )

    def _wrk(self, script: str, args: list[str], connections: int, duration_s: float) -> WrkResult:
        return run_wrk(
            self.server.base_url,
            script,
            args,
            connections=connections,
            duration_s=duration_s,
            threads=self.options.wrk_threads,
            timeout_s=self.options.timeout_s,
        )

    def headers_file(self, via: str) -> Path | None:
        """Log users in once and write their `Cookie:` or `Authorization:` lines to a file."""
        if via not in self._headers:
            users = list(range(CREDENTIAL_USERS))
            lines: list[str] | None = None
            if via == "cookie" and self.has_sessions:
                lines = self.client.session_cookies(users)
            elif via == "bearer" and self.has_tokens:
                pairs = self.client.token_pairs(users)
                lines = [f"Authorization: Bearer {pair.access}" for pair in pairs]
            path = None
            if lines is not None:
                path = self.work_dir / f"{self.name}-{via}.txt"
                path.write_text("\n".join(lines) + "\n")
            self._headers[via] = path
        return self._headers[via]

    # --- scenarios ----------------------------------------------------------------

    def login_run(
        self, cursor: UserCursor | None, connections: int
    ) -> Callable[[float], WrkResult]:
        """A wrk run of password logins: fresh users from `cursor`, or the warm few."""

        def run(duration_s: float) -> WrkResult:
            first, span = (cursor.position, cursor.remaining) if cursor else (0, WARM_USERS)
            args = [self.login_path, str(first), str(span), PASSWORD]
            result = self._wrk("login.lua", args, connections, duration_s)
            if cursor is not None:
                cursor.advance(result.sent)
            return result

        return run

    def login_cold(
        self, cursor: UserCursor, connections: int, scenario: str = "login-cold"
    ) -> Measurement:
        """Each request logs a different, never-seen user in: every one costs a full hash."""
        return self._measure(
            scenario, self.login_run(cursor, connections), note=f"POST {self.login_path}"
        )

    def login_warm(self, connections: int) -> Measurement:
        """The same few users log in again and again (what a credential cache is for)."""
        return self._measure(
            "login-warm", self.login_run(None, connections), note=f"POST {self.login_path}"
        )

    def me_run(self, via: str, connections: int) -> Callable[[float], WrkResult] | None:
        """A wrk run of GET /v1/me with cookies or bearer tokens, or None if unavailable."""
        path = self.headers_file(via) if via != "none" else None
        if via != "none" and path is None:
            return None
        args = ["/v1/me", str(path or "")]

        def run(duration_s: float) -> WrkResult:
            return self._wrk("get.lua", args, connections, duration_s)

        return run

    def me(self, via: str, connections: int, scenario: str | None = None) -> Measurement:
        """GET /v1/me authenticated by `via` ("cookie", "bearer"; "none" for the ceiling)."""
        scenario = scenario or f"me-{via}"
        run = self.me_run(via, connections)
        if run is None:
            endpoint = "POST /v1/sessions" if via == "cookie" else "POST /v1/tokens"
            return self.skip(scenario, f"{endpoint} {NOT_YET} (404)")
        return self._measure(scenario, run, note="GET /v1/me")

    def refresh(self, cursor: UserCursor, connections: int) -> Measurement:
        """Each request rotates a refresh token that was just issued (never reused)."""
        if not self.has_refresh or not self.has_tokens:
            return self.skip("refresh", f"POST /v1/tokens/refresh {NOT_YET} (404)")
        token_file = self.work_dir / f"{self.name}-refresh.txt"

        def run(duration_s: float) -> WrkResult:
            # Fresh tokens every round: in-flight rotations at the end of a run are lost.
            users = list(range(cursor.position, cursor.position + connections))
            cursor.advance(connections)
            pairs = self.client.token_pairs(users)
            token_file.write_text("\n".join(pair.refresh for pair in pairs) + "\n")
            return self._wrk(
                "refresh.lua", ["/v1/tokens/refresh", str(token_file)], connections, duration_s
            )

        return self._measure("refresh", run, note="POST /v1/tokens/refresh")

    def sweep(self, scenario: str, via: str, levels: tuple[int, ...]) -> None:
        """Measure one round at each connection count, for the latency-vs-concurrency plot."""
        for connections in levels:
            run = self.me_run(via, connections)
            if run is None:
                return
            try:
                result = run(self.options.profile.duration_s)
            except CredentialError as exc:
                progress(f"{self.name:<9} sweep {scenario} stopped: {exc}")
                return
            self.sweeps.append(
                SweepPoint(
                    self.name, scenario, connections, result.rps, result.p50_ms, result.p99_ms
                )
            )
            progress(
                f"{self.name:<9} sweep {scenario:<16} c={connections:<4} {result.rps:9.1f} req/s"
                f"  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:8.2f} ms"
            )
