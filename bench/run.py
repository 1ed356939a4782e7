"""`make bench`: keystile against its ceilings and the Flask original, in one run.

Order of a run (each server alone on the machine while it is measured):
1. PostgreSQL + Redis (embedded unless URLs are given), migrated; users reset and
   the small store seeded.
2. Ceilings: in-process argon2id rate; the bare Quart route on keystile's Hypercorn.
3. keystile: the scale scenario's small case, then the store grown to the large
   size, the large case, then every scenario and the concurrency sweeps.
4. The Flask baseline: the same scenarios on the same users.
5. JSON, Markdown and PNGs into the output directory.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.backends import Backends, backends
from bench.ceilings import hash_ceiling
from bench.checks import evaluate
from bench.measure import Measurement, SweepPoint, progress
from bench.options import Options, parse_options
from bench.plots import plot_latency, plot_throughput
from bench.processes import ServerProcess
from bench.report import Report, update_readme, write_json, write_markdown
from bench.scenarios import Target, UserCursor
from bench.seed import hash_password, reset_users, seed_users
from bench.servers import baseline_server, ceiling_server, keystile_server
from bench.storm import storm
from bench.wrk import WrkError, require_wrk
from keystile.settings import load_settings

__all__ = ["main"]


def _label(count: int) -> str:
    """1000 -> "1k", 1000000 -> "1M"."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= size and count % size == 0:
            return f"{count // size}{suffix}"
    return str(count)


@dataclass
class Plan:
    """Connection counts derived from keystile's admission settings and the options."""

    hash_threads: int
    hash_queue_limit: int
    login_connections: int
    storm_connections: int


def _plan(options: Options) -> Plan:
    env = options.server_env
    settings = load_settings(
        hash_threads=int(env.get("KEYSTILE_HASH_THREADS", "0")),
        hash_queue_limit=int(env.get("KEYSTILE_HASH_QUEUE_LIMIT", "0")),
    )
    threads, queue = settings.hash_thread_count, settings.hash_queue_bound
    # Twice the hash threads keeps every hash thread busy without touching the queue limit.
    login = options.login_connections or 2 * threads * options.workers
    # "4x capacity": four times what keystile admits at once (running + queued hashes).
    return Plan(threads, queue, login, 4 * (threads + queue) * options.workers)


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
        self.cursor = UserCursor(self.small, self.large)
        self.login_path = "/v1/sessions"
        self.read_via = "cookie"

    # --- phases ---------------------------------------------------------------------

    def seed_small(self) -> None:
        reset_users(self.backends.database_url)
        seconds = seed_users(self.backends.database_url, 0, self.small, self.password_hash)
        progress(f"seeded {self.small:,} users in {seconds:.1f} s")

    def ceilings(self) -> None:
        options, profile = self.options, self.options.profile
        progress(f"ceiling   hash-ceiling           running ({options.workers} threads) ...")
        rates = []
        cpu = 0.0
        for _ in range(profile.hash_rounds):
            rate, used = hash_ceiling(
                options.argon2_memory_kib,
                options.argon2_time_cost,
                options.argon2_parallelism,
                threads=options.workers,
                duration_s=profile.duration_s,
            )
            rates.append(rate)
            cpu += used
        total = statistics.median(rates) * profile.duration_s * len(rates)
        measurement = Measurement(
            "ceiling",
            "hash-ceiling",
            connections=options.workers,
            rps=statistics.median(rates),
            cpu_s_per_1k=cpu / total * 1000 if total else None,
            note=f"argon2id verifies/s, {options.workers} threads, in-process",
            rounds=[{"rps": round(r, 2)} for r in rates],
        )
        self.measurements.append(measurement)
        progress(measurement.line())
        server = ceiling_server(options, self.log_dir)
        with _serving(server):
            target = self._target("ceiling", server)
            target.me("none", options.connections, scenario="framework-ceiling")
            target.sweep("framework-ceiling", "none", profile.sweep)
            self._collect(target)

    def keystile(self) -> None:
        options = self.options
        server = keystile_server(options, self.backends, self.log_dir)
        with _serving(server):
            target = self._target("keystile", server)
            if target.has_tokens:
                self.login_path = target.login_path = "/v1/tokens"
                self.read_via = "bearer"
            else:
                progress("keystile  POST /v1/tokens not available yet: logins use /v1/sessions")
            self._scale(target)
            self._scenarios(target)
            self._collect(target)

    def baseline(self) -> None:
        options = self.options
        if not options.baseline:
            progress("baseline  skipped (--no-baseline)")
            return
        _apply_sql(
            self.backends.database_url,
            (options.root / "bench" / "baseline_flask" / "schema.sql").read_text(),
        )
        server = baseline_server(options, self.backends, self.log_dir)
        with _serving(server):
            self._scenarios(self._target("baseline", server))

    # --- pieces -----------------------------------------------------------------------

    def _target(self, name: str, server: ServerProcess) -> Target:
        return Target(
            name, server, self.options, self.work_dir, self.login_path, self.backends.pids
        )

    def _collect(self, target: Target) -> None:
        self.measurements.extend(target.results)
        self.sweeps.extend(target.sweeps)
        target.results.clear()
        target.sweeps.clear()

    def _scale(self, target: Target) -> None:
        """Cold logins and reads with the small store, then with the large one."""
        options, plan = self.options, self.plan
        for stored in (self.small, self.large):
            label = f"scale-{_label(stored)}"
            if stored == self.large:
                seconds = seed_users(
                    self.backends.database_url, self.small, self.large, self.password_hash
                )
                progress(f"seeded {self.large - self.small:,} more users in {seconds:.1f} s")
            cursor = UserCursor(0, self.small) if stored == self.small else self.cursor
            target.login_cold(cursor, plan.login_connections, scenario=f"{label}/login-cold")
            for via in ("bearer", "cookie"):
                target.me(via, options.connections, scenario=f"{label}/me-{via}")
        self._collect(target)

    def _scenarios(self, target: Target) -> None:
        options, plan = self.options, self.plan
        target.login_cold(self.cursor, plan.login_connections)
        target.login_warm(plan.login_connections)
        target.me("bearer", options.connections)
        target.me("cookie", options.connections)
        target.refresh(self.cursor, options.connections)
        storm(target, self.cursor, self.read_via, options.connections, plan.storm_connections)
        for via in ("bearer", "cookie"):
            target.sweep(f"me-{via}", via, options.profile.sweep)
        self._collect(target)

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
                "hash_queue_limit": plan.hash_queue_limit,
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
    checks = evaluate(run.measurements, (_label(run.small), _label(run.large)))
    report = Report(meta, run.measurements, run.sweeps, checks)
    out = options.output_dir
    out.mkdir(parents=True, exist_ok=True)
    stem = meta["run_id"]
    images = []
    if plot_latency(report, out / f"{stem}-latency.png"):
        images.append(f"{stem}-latency.png")
    if plot_throughput(report, out / f"{stem}-throughput.png"):
        images.append(f"{stem}-throughput.png")
    write_json(report, out / f"{stem}.json")
    text = write_markdown(report, out / f"{stem}.md", images)
    if options.update_readme:
        relative = (
            out.relative_to(options.root / "bench")
            if out.is_relative_to(options.root / "bench")
            else out
        )
        readme_text = text.replace("](" + stem, f"]({relative}/{stem}")
        update_readme(options.root / "bench" / "README.md", readme_text)
    sys.stdout.write(text)
    return out / f"{stem}.md"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the process exit status."""
    options = parse_options(argv)
    try:
        require_wrk()
    except WrkError as exc:
        sys.stderr.write(f"bench: {exc}\n")
        return 2
    started = time.time()
    plan = _plan(options)
    progress(
        f"profile {options.profile.name}: {options.workers} workers, "
        f"{options.profile.rounds} x {options.profile.duration_s:g} s rounds;"
        f" data in {options.data_dir}"
    )
    with backends(options.data_dir, options.database_url, options.redis_url) as stores:
        run = Run(options, stores, plan)
        run.seed_small()
        run.ceilings()
        run.keystile()
        run.baseline()
        path = _write(run, started)
    progress(f"done in {time.time() - started:.0f} s: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
