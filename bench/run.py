"""`make bench`: keystile against its ceilings and the Flask original, in one run.

1. PostgreSQL + Redis (embedded unless URLs are given), migrated; the main database
   seeded with the large user store, a second database with the small one.
2. Every server started at once, idle until measured: the bare-Quart ceiling,
   keystile on the large store, a second keystile on the small store (for `scale`),
   and the Flask baseline.
3. Scenario groups, each measured as interleaved arms (see measure.py): scale (small
   vs large store); hash ceiling + login-cold; login-warm; framework ceiling + reads;
   refresh; the storm; then the latency-vs-concurrency sweep.
4. JSON, Markdown and PNGs into the output directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.backends import Backends, backends, forget_credentials, second_store
from bench.burst import BURST_SECONDS_OF_CAPACITY, burst_measurement, run_burst
from bench.ceilings import hash_ceiling
from bench.checks import evaluate, store_label
from bench.measure import (
    Arm,
    Measurement,
    SweepPoint,
    measure_interleaved,
    progress,
)
from bench.options import Options, parse_options
from bench.processes import ServerProcess
from bench.report import Report, publish
from bench.scenarios import CREDENTIAL_USERS, Target, UserCursor
from bench.seed import grant_admin, hash_password, reset_users, seed_users
from bench.servers import baseline_server, ceiling_server, keystile_server
from bench.storm import storm_interleaved
from bench.totp import totp_login_arm, totp_user_count
from bench.wrk import WrkError, require_wrk
from keystile.services.calibration import measure_hash_ms
from keystile.services.passwords import Argon2Parameters
from keystile.settings import load_settings

__all__ = ["main"]


@dataclass
class Plan:
    """Connection counts derived from keystile's admission settings and the options."""

    hash_threads: int
    wait_budget_ms: int
    hash_ms: float
    admitted: int  # logins keystile admits at once, over all workers (running + waiting)
    login_connections: int
    storm_connections: int


def _plan(options: Options) -> Plan:
    env = options.server_env
    settings = load_settings(
        workers=options.workers,  # the default hash threads divide the cores among them
        hash_threads=int(env.get("KEYSTILE_HASH_THREADS", "0")),
        login_wait_budget_ms=int(env.get("KEYSTILE_LOGIN_WAIT_BUDGET_MS", "1500")),
    )
    threads, budget_ms = settings.hash_thread_count, settings.hashing.login_wait_budget_ms
    hash_ms = measure_hash_ms(
        Argon2Parameters(
            options.argon2_memory_kib, options.argon2_time_cost, options.argon2_parallelism
        )
    )
    # What admission lets in per worker: the running hashes, and as many waiting as the
    # threads finish within the budget (HashAdmission).
    per_worker = threads + int(budget_ms * threads / hash_ms)
    admitted = per_worker * options.workers
    # login-cold runs at the admitted capacity: every hash thread always has work.
    login = options.login_connections or admitted
    # "4x capacity": four times what keystile admits at once.
    return Plan(threads, budget_ms, hash_ms, admitted, login, 4 * admitted)


class Run:
    """State shared by the phases of one run."""

    def __init__(self, options: Options, stores: Backends, plan: Plan) -> None:
        self.options = options
        self.backends = stores
        self.plan = plan
        self.work_dir = options.data_dir / "work"
        self.log_dir = options.data_dir / "logs"
        for directory in (self.work_dir, self.log_dir):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        self.measurements: list[Measurement] = []
        self.sweeps: list[SweepPoint] = []
        profile = options.profile
        self.small, self.large = profile.small_store, max(profile.large_store, profile.small_store)
        self.password_hash = hash_password(
            options.argon2_memory_kib, options.argon2_time_cost, options.argon2_parallelism
        )
        # Users below CREDENTIAL_USERS are the warm and logged-in ones; cold logins start after.
        self.cursor = UserCursor(CREDENTIAL_USERS, self.large)
        self.small_cursor = UserCursor(CREDENTIAL_USERS, self.small)
        self.small_store = second_store(stores, "scale_small")
        self.login_path = "/v1/sessions"
        self.read_via = "cookie"

    # --- phases ---------------------------------------------------------------------

    def seed(self) -> None:
        """Empty both stores and seed them: the large one, and the small one for `scale`."""
        for stores, count in ((self.backends, self.large), (self.small_store, self.small)):
            reset_users(stores.database_url)
            seconds = seed_users(stores.database_url, 0, count, self.password_hash)
            progress(f"seeded {count:,} users in {seconds:.1f} s")
        grant_admin(self.backends.database_url)  # registers the client-credentials clients

    def measure(self, entries: Sequence[Arm | Measurement]) -> None:
        """Measure the arms interleaved; record skips as they are."""
        profile = self.options.profile
        arms = [entry for entry in entries if isinstance(entry, Arm)]
        measured = iter(
            measure_interleaved(
                arms,
                warmup_s=profile.warmup_s,
                duration_s=profile.duration_s,
                rounds=profile.rounds,
                db_pids=self.backends.pids,
                db_names=self.backends.pid_names,
            )
            if arms
            else []
        )
        for entry in entries:
            measurement = next(measured) if isinstance(entry, Arm) else entry
            if measurement.scenario == "hash-ceiling":
                measurement.p50_ms = measurement.p99_ms = measurement.max_ms = None
            self.record(measurement)

    def record(self, measurement: Measurement) -> None:
        self.measurements.append(measurement)
        progress(measurement.line())

    def hash_arm(self) -> Arm:
        options = self.options
        return Arm(
            "ceiling",
            "hash-ceiling",
            hash_ceiling(
                options.argon2_memory_kib,
                options.argon2_time_cost,
                options.argon2_parallelism,
                threads=options.workers,
            ),
            time.process_time,
            in_process=True,
            note=f"argon2id verifies/s, {options.workers} threads, in-process",
        )

    def totp_arm(self, keystile: Target) -> Arm | Measurement:
        """login-cold-totp (issue 15, bench/totp.py): keystile only, no baseline has TOTP."""
        profile, plan = self.options.profile, self.plan
        capacity = self.options.workers * plan.hash_threads * 1000 / plan.hash_ms
        seconds = profile.warmup_s + profile.rounds * profile.duration_s
        count = totp_user_count(capacity, seconds) + plan.login_connections
        return totp_login_arm(
            keystile, plan.login_connections, count, self.password_hash, profile.duration_s
        )

    def burst(self, sides: list[Target]) -> None:
        """N cold logins at once (N = 8 s of hash capacity), clients retrying; each side once."""
        ceiling = next(
            (m for m in self.measurements if m.scenario == "hash-ceiling" and m.rps), None
        )
        if ceiling is None or ceiling.rps is None:
            progress("burst     skipped: no hash ceiling measured")
            return
        seconds = 1 if self.options.profile.name == "smoke" else BURST_SECONDS_OF_CAPACITY
        size = max(8, int(seconds * ceiling.rps))
        for target in sides:
            progress(f"{target.name:<9} {'burst':<22} {size} logins at once ...")
            result, cpu = run_burst(
                target, self.cursor, size, self.backends.pids, self.backends.pid_names
            )
            measurement = burst_measurement(target, result, ceiling.rps)
            measurement.extra.update(cpu.summary())
            self.record(measurement)

    def scale(self, large: Target, small: Target) -> None:
        """Cold logins and reads against the small and the large store, interleaved."""
        options, plan = self.options, self.plan
        entries: list[Arm | Measurement] = []
        for target, count, cursor, prepare in (
            (small, self.small, self.small_cursor, self._forget_small_store_credentials),
            (large, self.large, self.cursor, None),
        ):
            label = f"scale-{store_label(count)}"
            entries.append(
                target.login(f"{label}/login-cold", cursor, plan.login_connections, prepare)
            )
        for via in ("bearer", "cookie"):
            for target, count in ((small, self.small), (large, self.large)):
                scenario = f"scale-{store_label(count)}/me-{via}"
                entries.append(target.me(via, options.connections, scenario))
        self.measure(entries)

    def _forget_small_store_credentials(self) -> None:
        # The small store's users come round again within the credential cache's
        # lifetime on a fast machine: drop their cached successes, and start each round
        # from its first user, so a round never reaches the end of the store (where the
        # span left would make users repeat within the round).
        forget_credentials(self.small_store.redis_url)
        self.small_cursor.restart()

    def scenarios(self, ceiling: Target, sides: list[Target]) -> None:
        """Every scenario, each with keystile's and the baseline's rounds interleaved."""
        options, plan, cursor = self.options, self.plan, self.cursor
        conns = options.connections
        cold: list[Arm | Measurement] = [self.hash_arm()]
        cold += [t.login("login-cold", cursor, plan.login_connections) for t in sides]
        self.measure([*cold, self.totp_arm(sides[0])])  # login-cold-totp beside login-cold
        self.burst(sides)
        self.measure([t.login("login-warm", None, plan.login_connections) for t in sides])
        reads: list[Arm | Measurement] = [ceiling.me("none", conns, "framework-ceiling")]
        for via in ("bearer", "cookie"):
            reads += [t.me(via, conns) for t in sides]
        reads += [t.me_api_key(conns) for t in sides]
        self.measure(reads)
        self.measure([t.refresh(cursor, conns) for t in sides])
        self.measure([t.client_credentials(conns) for t in sides])
        for measurement in storm_interleaved(
            sides,
            cursor,
            self.read_via,
            conns,
            plan.storm_connections,
            db_pids=self.backends.pids,
            db_names=self.backends.pid_names,
        ):
            self.record(measurement)

    def sweep(self, ceiling: Target, sides: list[Target]) -> None:
        """Each read scenario at each connection count, interleaved, for the latency plot."""
        profile = self.options.profile
        series = [(ceiling, "framework-ceiling", "none")]
        series += [(t, f"me-{via}", via) for via in ("bearer", "cookie") for t in sides]
        for connections in profile.sweep:
            arms = [
                arm
                for target, scenario, via in series
                if isinstance(arm := target.me(via, connections, scenario), Arm)
            ]
            for m in measure_interleaved(
                arms,
                warmup_s=0,
                duration_s=profile.duration_s,
                rounds=profile.sweep_rounds,
                db_pids=self.backends.pids,
                quiet=True,
            ):
                point = SweepPoint(
                    m.target,
                    m.scenario,
                    connections,
                    m.rps or 0.0,
                    m.p50_ms or 0.0,
                    m.p99_ms or 0.0,
                )
                self.sweeps.append(point)
                progress(
                    f"{m.target:<9} sweep {m.scenario:<17} c={connections:<4}"
                    f" {point.rps:9.1f} req/s  p50 {point.p50_ms:7.2f} ms"
                    f"  p99 {point.p99_ms:8.2f} ms"
                )

    def all(self) -> None:
        """Start every server, then run every phase; servers stop on the way out."""
        options = self.options
        servers = [
            ceiling_server(options, self.log_dir),
            keystile_server(options, self.backends, self.log_dir),
            keystile_server(options, self.small_store, self.log_dir, name="keystile-small"),
        ]
        if options.baseline:
            _apply_sql(
                self.backends.database_url,
                (options.root / "bench" / "baseline_flask" / "schema.sql").read_text(),
            )
            servers.append(baseline_server(options, self.backends, self.log_dir))
        else:
            progress("baseline  skipped (--no-baseline)")
        small_dir = self.work_dir / "small-store"
        small_dir.mkdir()
        with contextlib.ExitStack() as stack:
            for server in servers:
                stack.enter_context(_serving(server))
            ceiling = Target("ceiling", servers[0], options, self.work_dir)
            keystile = Target("keystile", servers[1], options, self.work_dir)
            if keystile.has_tokens:
                self.login_path = "/v1/tokens"
                self.read_via = "bearer"
            else:
                progress("keystile  POST /v1/tokens not available yet: logins use /v1/sessions")
            keystile.login_path = self.login_path
            small = Target("keystile", servers[2], options, small_dir, self.login_path)
            sides = [keystile]
            if options.baseline:
                sides.append(
                    Target("baseline", servers[3], options, self.work_dir, self.login_path)
                )
            self.scale(keystile, small)
            self.scenarios(ceiling, sides)
            self.sweep(ceiling, sides)

    def meta(self, started: float) -> dict[str, Any]:
        from bench.machine import commit, machine_info

        options, profile, plan = self.options, self.options.profile, self.plan
        machine = machine_info()
        return {
            "run_id": f"{time.strftime('%Y-%m-%d', time.localtime(started))}-{machine['host']}",
            "profile": profile.name,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "elapsed_s": round(time.time() - started, 1),
            "commit": commit(options.root),
            "machine": machine,
            "backends": "embedded" if self.backends.embedded else "given URLs",
            "parameters": {
                "workers": options.workers,
                "argon2_memory_kib": options.argon2_memory_kib,
                "argon2_time_cost": options.argon2_time_cost,
                "argon2_parallelism": options.argon2_parallelism,
                "hash_threads": plan.hash_threads,
                "login_wait_budget_ms": plan.wait_budget_ms,
                "hash_ms": round(plan.hash_ms, 1),
                "admitted": plan.admitted,
                "connections": options.connections,
                "login_connections": plan.login_connections,
                "storm_connections": plan.storm_connections,
                "duration_s": profile.duration_s,
                "rounds": profile.rounds,
                "warmup_s": profile.warmup_s,
                "sweep": list(profile.sweep),
                "users_stored": self.large,
                "scale": [self.small, self.large],
                "login_path": self.login_path,
                "reads_in_storm": f"me-{self.read_via}",
                "wrk_threads": options.wrk_threads,
                "timeout_s": options.timeout_s,
                "server_env": options.server_env,
                "nice": -options.nice,
            },
        }


class _serving:
    """Context manager: the server runs inside the block and is stopped after it."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server

    def __enter__(self) -> ServerProcess:
        progress(f"starting {self.server.name} ...")
        self.server.start()
        progress(f"{self.server.name} ready on {self.server.base_url} (log {self.server.log_path})")
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def _apply_sql(database_url: str, sql: str) -> None:
    async def _apply() -> None:
        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            await connection.execute(sql, timeout=30)
        finally:
            await connection.close()

    asyncio.run(_apply())


def _write(run: Run, started: float) -> Path:
    options = run.options
    meta = run.meta(started)
    checks = evaluate(
        run.measurements, (store_label(run.small), store_label(run.large)), meta["parameters"]
    )
    report = Report(meta, run.measurements, run.sweeps, checks)
    readme = options.root / "bench" / "README.md" if options.update_readme else None
    sys.stdout.write(publish(report, options.output_dir, readme))
    return options.output_dir / f"{meta['run_id']}.md"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit status."""
    options = parse_options(argv)
    try:
        require_wrk()
    except WrkError as exc:
        sys.stderr.write(f"bench: {exc}\n")
        return 2
    if options.nice:
        # Inherited by everything started from here: servers, databases, wrk.
        os.setpriority(os.PRIO_PROCESS, 0, -options.nice)
    started = time.time()
    plan = _plan(options)
    progress(
        f"profile {options.profile.name}: {options.workers} workers, "
        f"{options.profile.rounds} x {options.profile.duration_s:g} s rounds;"
        f" data in {options.data_dir}"
    )
    with backends(options.data_dir, options.database_url, options.redis_url) as stores:
        run = Run(options, stores, plan)
        run.seed()
        run.all()
        path = _write(run, started)
    progress(f"done in {time.time() - started:.0f} s: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
