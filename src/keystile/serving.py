"""`keystile serve`: Hypercorn worker processes that drain on SIGTERM (S32).

Hypercorn's own multi-worker runner (`hypercorn.run.run`) SIGTERMs every worker
still running as soon as the first one has exited, so with two or more workers a
slow request on a second worker is cut off; and it offers no hook to say "draining"
on /readyz. This module keeps Hypercorn's server (`worker_serve`, one per process,
sharing the listening sockets) and replaces only the supervisor:

1. SIGTERM or SIGINT to the supervisor (or SIGTERM to any worker) sets one shared
   event. Each worker marks itself draining (/readyz answers 503), keeps serving for
   `drain_delay_seconds` so load balancers notice, then stops accepting; in-flight
   requests get Hypercorn's `graceful_timeout`; then pools close (lifespan shutdown).
2. The supervisor waits for every worker, kills only those past all deadlines,
   drops dead workers' live gauges from the metrics directory, and exits.
3. A worker that dies on its own is replaced, unless it died during start-up
   (then the whole server stops with an error, for the orchestrator to see).
4. Workers stop by themselves if the supervisor disappears (SIGKILL).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import multiprocessing
import os
import shutil
import signal
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from types import FrameType
from typing import Any

from hypercorn.config import Config, Sockets

from keystile.logs import LogFormat, configure_logging
from keystile.settings import Settings, SettingsError

__all__ = ["listen", "prepare_metrics_dir", "serve"]

_log = logging.getLogger("keystile.serve")

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A worker that exits sooner than this after starting is failing to start, not crashing.
_MIN_UPTIME_SECONDS = 10.0
_POLL_SECONDS = 0.1


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_metrics_dir(data_dir: Path) -> tuple[Path, bool]:
    """Return an empty directory for prometheus-client's multiprocess files.

    $PROMETHEUS_MULTIPROC_DIR is used if set (emptied of old files); otherwise a
    directory of this server's own under `data_dir`, so several servers sharing a
    data directory never mix their counters. Returns the path and whether it is ours
    to delete at exit.
    """
    preset = os.environ.get(_MULTIPROC_ENV)
    if preset:
        directory = Path(preset)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        return directory, False
    parent = data_dir.resolve() / "metrics"
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob("serve-*"):
        pid = old.name.removeprefix("serve-")
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    directory = parent / f"serve-{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    return directory, True


def listen(config: Config, settings: Settings) -> Sockets:
    """Open the listening sockets of `config.bind`, or raise `SettingsError` saying why not."""
    serving = settings.serving
    try:
        return config.create_sockets()
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise SettingsError(
                f"port {serving.port} is in use; set KEYSTILE_PORT (or --port) to a free "
                "port, or stop what listens there"
            ) from None
        raise SettingsError(
            f"cannot listen on {serving.host}:{serving.port}: {error.strerror or error}; "
            "check KEYSTILE_HOST and KEYSTILE_PORT"
        ) from None


def serve(config: Config, settings: Settings, sockets: Sockets | None = None) -> int:
    """Run `serving.workers` Hypercorn workers until SIGTERM/SIGINT; return the exit code.

    `sockets` are already listening (see `listen`); by default they are opened here.
    """
    if sockets is None:
        sockets = listen(config, settings)
    metrics_dir, owned = prepare_metrics_dir(settings.serving.data_dir)
    os.environ[_MULTIPROC_ENV] = str(metrics_dir)  # inherited by every worker
    context = multiprocessing.get_context("spawn")
    stop = context.Event()

    signalled: list[int] = []

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        # Only note it: locks (the event's, logging's) are not safe in a signal handler.
        signalled.append(signum)

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    worker_args: dict[str, Any] = {
        "config": config,
        "sockets": sockets,
        "stop": stop,
        "log_level": settings.logs.level,
        "log_format": settings.logs.format,
        "drain_delay": settings.serving.drain_delay_seconds,
        "supervisor": os.getpid(),
    }
    started: dict[BaseProcess, float] = {}
    exit_code = 0
    try:
        for _ in range(settings.serving.workers):
            started[_start_worker(context, worker_args)] = time.monotonic()
        while not stop.is_set():
            if signalled:
                _log.info("shutting down", extra={"signal": signal.Signals(signalled[0]).name})
                stop.set()
                break
            for sentinel in wait([process.sentinel for process in started], timeout=_POLL_SECONDS):
                process = next(p for p in started if p.sentinel == sentinel)
                uptime = time.monotonic() - started.pop(process)
                process.join()
                _forget_worker(process)
                if stop.is_set():
                    break
                _log.error(
                    "worker exited",
                    extra={"pid": process.pid, "exit_code": process.exitcode, "uptime": uptime},
                )
                if uptime < _MIN_UPTIME_SECONDS:
                    exit_code = process.exitcode or 1
                    stop.set()
                    break
                started[_start_worker(context, worker_args)] = time.monotonic()
        # No worker will be started again: let the listeners close when the workers' do,
        # so that new connections are refused rather than left waiting in the backlog.
        _close_sockets(sockets)
        deadline = (
            time.monotonic()
            + settings.serving.drain_delay_seconds
            + config.graceful_timeout
            + config.shutdown_timeout
        )
        for process in list(started):
            process.join(max(0.0, deadline - time.monotonic()))
        for process in list(started):
            if process.is_alive():
                _log.error("worker did not stop in time; killing it", extra={"pid": process.pid})
                process.kill()
                process.join()
                exit_code = exit_code or 1
            elif process.exitcode:
                exit_code = exit_code or process.exitcode
            _forget_worker(process)
        return exit_code
    finally:
        _close_sockets(sockets)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _close_sockets(sockets: Sockets) -> None:
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets]:
        sock.close()


def _start_worker(context: Any, worker_args: dict[str, Any]) -> BaseProcess:
    process: BaseProcess = context.Process(target=_worker, kwargs=worker_args, name="keystile")
    process.start()
    return process


def _forget_worker(process: BaseProcess) -> None:
    from keystile.metrics import mark_process_dead

    if process.pid is not None:
        mark_process_dead(process.pid)


def _worker(
    config: Config,
    sockets: Sockets,
    stop: Event,
    log_level: str,
    log_format: LogFormat,
    drain_delay: float,
    supervisor: int,
) -> None:
    """Serve in one worker process until the shared stop event is set or `supervisor` dies."""
    configure_logging(log_level, log_format)
    # Ctrl-C reaches the whole process group; the supervisor alone decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    terminated: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _: terminated.append(signum))

    from hypercorn.asyncio.run import worker_serve
    from hypercorn.utils import wrap_app

    from keystile.app import create_app
    from keystile.web.health import draining_flag

    app = create_app()
    draining = draining_flag(app)
    # keystile logs each request itself; hypercorn's own messages go through the root logger.
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")

    async def shutdown_trigger() -> None:
        while not stop.is_set() and os.getppid() == supervisor:
            if terminated:  # SIGTERM to this worker (or its group): everyone drains
                stop.set()
                break
            await asyncio.sleep(_POLL_SECONDS)
        draining.set()
        _log.info("draining", extra={"pid": os.getpid(), "delay_seconds": drain_delay})
        await asyncio.sleep(drain_delay)

    loop_factory = None
    if config.worker_class == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(
            worker_serve(
                wrap_app(app, config.wsgi_max_body_size, "asgi"),
                config,
                sockets=sockets,
                shutdown_trigger=shutdown_trigger,
            )
        )
    _log.info("worker stopped", extra={"pid": os.getpid()})
