"""The HTTP scenarios of BENCHMARK.md, as arms to be measured against one server each.

Every scenario is a wrk run (bench/lua/*.lua) at a fixed connection count. A `Target`
turns a scenario into an `Arm` (see measure.py) or, when it needs an endpoint the
server does not have yet (bearer tokens, refresh), into a skip with the reason; those
light up by themselves once the endpoint answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.credentials import Client
from bench.machine_access import api_key_lines, client_lines
from bench.measure import Arm, CpuSplit, Measurement
from bench.options import Options
from bench.processes import ServerProcess, tree_cpu_seconds
from bench.seed import PASSWORD
from bench.wrk import WrkJob, WrkResult, start_wrk

__all__ = ["CREDENTIAL_USERS", "NOT_YET", "WARM_USERS", "Target", "UserCursor"]

WARM_USERS = 8  # login-warm cycles through this many accounts
CREDENTIAL_USERS = 16  # me-* rotate through this many logged-in accounts
NOT_YET = "not available yet"


class UserCursor:
    """Hands out seeded users that have not logged in yet, so cold logins stay cold.

    Users `first` .. `stored - 1` are handed out in order. Past the end it wraps to
    `first` (only a small store runs out; its users' logins are minutes apart by then).
    """

    def __init__(self, first: int, stored: int) -> None:
        self.first = first
        self.position = first
        self.stored = stored

    @property
    def remaining(self) -> int:
        return max(1, self.stored - self.position)

    def restart(self) -> None:
        """Hand out users from `first` again (their cached successes must be gone)."""
        self.position = self.first

    def advance(self, used: int) -> None:
        self.position += used
        if self.position >= self.stored:
            span = max(1, self.stored - self.first)
            self.position = self.first + (self.position - self.first) % span


@dataclass
class Target:
    """A running server and the scenarios that can be run against it."""

    name: str
    server: ServerProcess
    options: Options
    work_dir: Path
    login_path: str = "/v1/sessions"

    def __post_init__(self) -> None:
        self.client = Client(self.server.host, self.server.port)
        self.has_sessions = self.client.has_route("/v1/sessions")
        self.has_tokens = self.client.has_route("/v1/tokens")
        self.has_refresh = self.client.has_route("/v1/tokens/refresh")
        self._headers: dict[str, Path | None] = {}

    # --- plumbing -----------------------------------------------------------------

    def skip(self, scenario: str, reason: str) -> Measurement:
        return Measurement(self.name, scenario, skipped=reason)

    def cpu_seconds(self) -> float:
        """CPU seconds the server's process tree has used so far."""
        return tree_cpu_seconds((self.server.pid,))

    def hashing(self) -> tuple[float, int] | None:
        """The server's hashing CPU seconds and hashes so far (keystile's metrics), or None."""
        return self.client.hashing()

    def cpu_split(self, db_pids: tuple[int, ...], db_names: tuple[str, ...]) -> CpuSplit:
        """A CPU meter for this server, with its hashing threads' share where it reports one."""
        return CpuSplit(self.cpu_seconds, db_pids, db_names, hashing=self.hashing)

    def arm(
        self,
        scenario: str,
        run: Callable[[float], WrkResult],
        note: str = "",
        prepare: Callable[[], None] | None = None,
    ) -> Arm:
        def before_round() -> None:
            self.server.settle()
            if prepare is not None:
                prepare()

        return Arm(
            self.name,
            scenario,
            run,
            self.cpu_seconds,
            note=note,
            prepare=before_round,
            hashing=self.hashing,
        )

    def start(self, script: str, args: list[str], connections: int, duration_s: float) -> WrkJob:
        """Start a wrk run against this server (see `bench.wrk.start_wrk`)."""
        return start_wrk(
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

    def login(
        self,
        scenario: str,
        cursor: UserCursor | None,
        connections: int,
        prepare: Callable[[], None] | None = None,
    ) -> Arm | Measurement:
        """Password logins: never-seen users from `cursor` (cold), or the same few (warm).

        `prepare` runs before each round, outside the metering.
        """

        def run(duration_s: float) -> WrkResult:
            first, span = (cursor.position, cursor.remaining) if cursor else (0, WARM_USERS)
            # These clients honour Retry-After, as the service asks (the storm's do not).
            threads = str(self.options.wrk_threads)
            args = [self.login_path, str(first), str(span), PASSWORD, threads, "retry-after"]
            result = self.start("login.lua", args, connections, duration_s).result()
            if cursor is not None:
                cursor.advance(result.sent)
            return result

        return self.arm(scenario, run, note=f"POST {self.login_path}", prepare=prepare)

    def me(self, via: str, connections: int, scenario: str | None = None) -> Arm | Measurement:
        """GET /v1/me authenticated by `via` ("cookie", "bearer"; "none" for the ceiling)."""
        scenario = scenario or f"me-{via}"
        path = self.headers_file(via) if via != "none" else None
        if via != "none" and path is None:
            endpoint = "POST /v1/sessions" if via == "cookie" else "POST /v1/tokens"
            return self.skip(scenario, f"{endpoint} {NOT_YET} (404)")
        args = ["/v1/me", str(path or "")]

        def run(duration_s: float) -> WrkResult:
            return self.start("get.lua", args, connections, duration_s).result()

        return self.arm(scenario, run, note="GET /v1/me")

    def refresh(self, cursor: UserCursor, connections: int) -> Arm | Measurement:
        """Each request rotates a refresh token that was just issued (never reused)."""
        if not self.has_refresh or not self.has_tokens:
            return self.skip("refresh", f"POST /v1/tokens/refresh {NOT_YET} (404)")
        token_file = self.work_dir / f"{self.name}-refresh.txt"

        def prepare() -> None:
            # Fresh tokens every round (rotations in flight when a run ends are lost);
            # these logins hash, so they happen before the round's metering starts.
            users = list(range(cursor.position, cursor.position + connections))
            cursor.advance(connections)
            pairs = self.client.token_pairs(users)
            token_file.write_text("\n".join(pair.refresh for pair in pairs) + "\n")

        def run(duration_s: float) -> WrkResult:
            args = ["/v1/tokens/refresh", str(token_file)]
            return self.start("refresh.lua", args, connections, duration_s).result()

        return self.arm("refresh", run, note="POST /v1/tokens/refresh", prepare=prepare)

    # --- machine access (issue 16) -------------------------------------------------

    def me_api_key(self, connections: int) -> Arm | Measurement:
        """GET /v1/me with API keys (`Authorization: Bearer ks_pat_...`) of logged-in users."""
        if not self.has_tokens or not self.client.has_route("/v1/me/api-keys"):
            return self.skip("me-api-key", f"POST /v1/me/api-keys {NOT_YET} (404)")
        path = self.work_dir / f"{self.name}-api-key.txt"
        if not path.exists():
            lines = api_key_lines(self.client, list(range(CREDENTIAL_USERS)))
            path.write_text("\n".join(lines) + "\n")
        args = ["/v1/me", str(path)]

        def run(duration_s: float) -> WrkResult:
            return self.start("get.lua", args, connections, duration_s).result()

        return self.arm("me-api-key", run, note="GET /v1/me (API key)")

    def client_credentials(self, connections: int) -> Arm | Measurement:
        """POST /v1/oauth/token (client credentials, HTTP Basic) for a few clients."""
        if not self.has_tokens or not self.client.has_route("/v1/oauth/token"):
            return self.skip("client-credentials", f"POST /v1/oauth/token {NOT_YET} (404)")
        path = self.work_dir / f"{self.name}-clients.txt"
        if not path.exists():
            path.write_text("\n".join(client_lines(self.client, 4)) + "\n")
        args = ["/v1/oauth/token", str(path)]

        def run(duration_s: float) -> WrkResult:
            return self.start("client_credentials.lua", args, connections, duration_s).result()

        return self.arm("client-credentials", run, note="POST /v1/oauth/token")
