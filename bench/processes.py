"""Server processes under test: start, wait until ready, meter their CPU, stop.

Each server runs in its own process group so stopping it also stops its workers
(Hypercorn and gunicorn fork them), and nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "ServerProcess",
    "http_status",
    "machine_busy_seconds",
    "settle",
    "tree_cpu_seconds",
]


def http_status(host: str, port: int, path: str, timeout: float = 2.0) -> int | None:
    """Return the status of GET `path`, or None if nothing answers."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes and all their descendants."""
    total = 0.0
    seen: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in members:
            if process.pid in seen:
                continue
            seen.add(process.pid)
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def _busy(times: Any) -> float:
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _working_seconds() -> float:
    """CPU seconds spent working on this machine since boot: busy minus what the host took."""
    times = psutil.cpu_times()
    return _busy(times) - float(getattr(times, "steal", 0.0))


def settle(*, idle_cores: float = 0.3, window_s: float = 0.25, limit_s: float = 20.0) -> float:
    """Wait until this machine's work has about stopped; return the seconds waited.

    A server does not stop when its load generator does: a sync baseline still answers
    the requests queued in its listen backlog, each with a hash, for a second or more.
    Started at once, the next arm would share the cores with that leftover work (the CPU
    split's "other"). Waits while more than `idle_cores` cores are busy over a
    `window_s` window, for at most `limit_s` seconds (a machine that is never quiet is
    reported by the split, not waited out).
    """
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = _working_seconds()
        time.sleep(window_s)
        if (_working_seconds() - before) / window_s < idle_cores:
            break
    return time.monotonic() - started


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has spent busy (all cores, since boot)."""
    return _busy(psutil.cpu_times())


class ServerProcess:
    """A server command run in its own process group, logging to a file."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        port: int,
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        ready_path: str = "/healthz",
    ) -> None:
        self.name = name
        self.command = command
        self.port = port
        self.host = "127.0.0.1"
        self._env = dict(env)
        self._cwd = cwd
        self.log_path = log_path
        self._ready_path = ready_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env_value(self, key: str) -> str | None:
        """Return a variable of the server's environment (e.g. its secret key)."""
        return self._env.get(key)

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the server and wait until `ready_path` answers 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command,
                cwd=self._cwd,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at startup; see {self.log_path}")
            if http_status(self.host, self.port, self._ready_path) == 200:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"{self.name} was not ready within {timeout_s:.0f} s; see {self.log_path}"
        )

    def settle(self, timeout_s: float = 60.0, fast_s: float = 0.1) -> float:
        """Wait until the server answers /healthz quickly again; return the seconds waited.

        After a flood (the storm, or wrk stopping with requests still queued in the
        listen backlog) a server may still be working off requests nobody waits for;
        the next measurement must not pay for them.
        """
        started = time.monotonic()
        quick = 0
        while quick < 2 and time.monotonic() - started < timeout_s:
            asked = time.monotonic()
            status = http_status(self.host, self.port, "/healthz", timeout=timeout_s)
            quick = quick + 1 if status == 200 and time.monotonic() - asked < fast_s else 0
            if quick < 2:
                time.sleep(0.05)
        return time.monotonic() - started

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it has not gone in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        group = os.getpgid(process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            process.wait()
        # Workers may outlive the master by a moment; the group id is still ours to end.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
