"""Real `keystile serve` processes for the operations tests, on the shared test backing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from keystile.embedded import free_port
from keystile.rates import Action
from tests.support.backing import ROOMY_RATE, Backing

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEY = "s" * 48


@dataclass
class Server:
    """One `keystile serve` (a supervisor and its workers, in their own process group)."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    data_dir: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill_group(self) -> None:
        """SIGKILL the supervisor and every worker at once, as a container kill does."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # any orphaned worker
        return self.process.returncode

    def log_lines(self) -> list[dict[str, Any]]:
        """Return the server's log as parsed JSON lines (every line must be JSON)."""
        text = self.log_path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def start_server(
    backing: Backing, directory: Path, *, workers: int = 2, port: int | None = None, **settings: str
) -> Server:
    """Start `keystile serve` on `port` (default: a free one) with the given KEYSTILE_* settings."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSTILE_", "PROMETHEUS_"))}
    env.update(
        KEYSTILE_SETTINGS_FILE=str(ROOT / "settings.toml"),
        KEYSTILE_DATABASE_URL=backing.database_url,
        KEYSTILE_REDIS_URL=backing.redis_url,
        KEYSTILE_SECRET_KEY=SECRET_KEY,
        KEYSTILE_COOKIE_SECURE="false",
        KEYSTILE_DATA_DIR=str(directory / "var"),
        KEYSTILE_DB_POOL_SIZE="3",
        KEYSTILE_ARGON2_MEMORY_KIB="64",
        KEYSTILE_ARGON2_TIME_COST="1",
        KEYSTILE_ARGON2_ALLOW_WEAK="true",
        KEYSTILE_HASH_THREADS="2",
        PYTHONPATH=str(ROOT),  # test-only extensions (tests/) can be loaded
    )
    # Every request comes from 127.0.0.1: per-address limits would refuse the load itself.
    env.update({f"KEYSTILE_RATE_LIMIT_{action.upper()}_PER_IP": ROOMY_RATE for action in Action})
    env.update({f"KEYSTILE_{key.upper()}": value for key, value in settings.items()})
    log_path = directory / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keystile",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(process, port, log_path, directory / "var")


def wait_until_ready(server: Server, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"keystile serve exited: {server.log_path.read_text()}")
        try:
            if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"keystile serve did not become ready: {server.log_path.read_text()}")
