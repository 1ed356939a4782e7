"""The three servers a run measures: keystile, the bare-Quart ceiling, the Flask baseline.

All bind 127.0.0.1 on a free port, get the same worker count and the same argon2
parameters, and point at the same PostgreSQL. Only one runs at a time, so each has
the machine to itself while it is measured.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from bench.backends import Backends
from bench.options import Options
from bench.processes import ServerProcess
from keystile.embedded import free_port

__all__ = [
    "baseline_server",
    "ceiling_server",
    "keystile_server",
    "scratch_keystile_server",
    "unlimited_rates",
]


def unlimited_rates(*actions: str, scopes: tuple[str, ...] = ("IP", "ACCOUNT")) -> dict[str, str]:
    """Rate limits so high they never refuse, for `actions` per `scopes` (environment).

    wrk sends every request from 127.0.0.1 for a handful of accounts: the default limits
    would turn a run into a measurement of 429s. Every request still pays for the check.
    """
    return {
        f"KEYSTILE_RATE_LIMIT_{action}_PER_{scope}": "100000000/minute"
        for action in actions
        for scope in scopes
    }


def _base_env(options: Options) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    env["PYTHONPATH"] = str(options.root)
    return env


def keystile_server(
    options: Options, backends: Backends, log_dir: Path, name: str = "keystile"
) -> ServerProcess:
    """`keystile serve` with N Hypercorn workers on the given backends."""
    port = free_port()
    env = _base_env(options) | {
        "KEYSTILE_DATABASE_URL": backends.database_url,
        "KEYSTILE_REDIS_URL": backends.redis_url,
        "KEYSTILE_SECRET_KEY": secrets.token_urlsafe(48),
        "KEYSTILE_COOKIE_SECURE": "false",
        "KEYSTILE_DATA_DIR": str(options.data_dir),
        "KEYSTILE_LOG_LEVEL": "warning",
        "KEYSTILE_ARGON2_MEMORY_KIB": str(options.argon2_memory_kib),
        "KEYSTILE_ARGON2_TIME_COST": str(options.argon2_time_cost),
        "KEYSTILE_ARGON2_PARALLELISM": str(options.argon2_parallelism),
        **unlimited_rates("LOGIN", "TOKEN", "REFRESH", "REGISTER", "PASSWORD_CHANGE"),
        **unlimited_rates("CLIENT_CREDENTIALS", scopes=("IP", "CLIENT")),
        **options.server_env,
    }
    command = [
        sys.executable,
        "-m",
        "keystile",
        "serve",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--workers={options.workers}",
    ]
    return ServerProcess(
        name,
        command,
        port=port,
        env=env,
        cwd=options.root,
        log_path=log_dir / f"{name}.log",
        ready_path="/readyz",
    )


def ceiling_server(options: Options, log_dir: Path) -> ServerProcess:
    """The bare Quart route on keystile's Hypercorn config (`bench/ceiling_app.py`)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "bench.ceiling_app",
        f"--port={port}",
        f"--workers={options.workers}",
    ]
    return ServerProcess(
        "framework-ceiling",
        command,
        port=port,
        env=_base_env(options),
        cwd=options.root,
        log_path=log_dir / "ceiling.log",
    )


def baseline_server(options: Options, backends: Backends, log_dir: Path) -> ServerProcess:
    """The Flask original under gunicorn sync workers (`bench/baseline_flask/`)."""
    port = free_port()
    app_dir = options.root / "bench" / "baseline_flask"
    gunicorn = options.baseline_venv / "bin" / "gunicorn"
    if not gunicorn.exists():
        raise RuntimeError(f"{gunicorn} is missing: `make bench` creates {options.baseline_venv}")
    env = _base_env(options) | {
        "BIND": f"127.0.0.1:{port}",
        "WORKERS": str(options.workers),
        "DATABASE_URL": backends.database_url,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ARGON2_MEMORY_KIB": str(options.argon2_memory_kib),
        "ARGON2_TIME_COST": str(options.argon2_time_cost),
        "ARGON2_PARALLELISM": str(options.argon2_parallelism),
    }
    command = [str(gunicorn), "--config", str(app_dir / "gunicorn.conf.py"), "app:app"]
    return ServerProcess(
        "baseline", command, port=port, env=env, cwd=app_dir, log_path=log_dir / "baseline.log"
    )


def scratch_keystile_server(
    work: Path, *, workers: int, log_level: str = "warning", env: dict[str, str] | None = None
) -> ServerProcess:
    """`keystile serve` on a free port with everything of its own under `work`: embedded
    PostgreSQL and Redis, a fresh secret key, plain-http cookies; `env` on top.

    For the side tools (`bench.profile_me`, `bench.refresh_ab`), which need no shared
    backends; `python -m keystile` runs whichever source tree `env`'s PYTHONPATH names.
    """
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTILE_")}
    environ.update(
        KEYSTILE_DATA_DIR=str(work / "var"),
        KEYSTILE_COOKIE_SECURE="false",
        KEYSTILE_SECRET_KEY=secrets.token_hex(32),
        KEYSTILE_LOG_LEVEL=log_level,
        **(env or {}),
    )
    command = [sys.executable, "-m", "keystile", "serve", "--port", str(port)]
    return ServerProcess(
        "keystile",
        [*command, "--workers", str(workers)],
        port=port,
        env=environ,
        cwd=work,
        log_path=work / "server.log",
        ready_path="/readyz",
    )
