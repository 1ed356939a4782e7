"""The shared Redis client, with deadlines on connect and on every command (S29).

`create_redis` understands three deployments, each through redis-py's own client:

- `redis://`, `rediss://`, `unix://`: one server (`BlockingConnectionPool.from_url`).
- `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`: the master
  of `service` as the Sentinels name it (`Sentinel(...).master_for`); after a failover
  the pool finds the new master by itself. `rediss+sentinel://` speaks TLS to Redis.
- `redis+cluster://host:port[,host:port...]` (or `rediss+cluster://`), or any
  `redis://` URL with `cluster=True` (`redis_cluster = true`): Redis Cluster
  (`RedisCluster`, which follows MOVED/ASK and refreshes its slot map itself). Its
  nodes reopen a connection the server closed (a node restarted) before a command
  uses it, as the pools of the other two do (`_NoticingConnection`).

A worker has more requests in flight than its pool has connections whenever logins
arrive in a burst. redis-py's default pool then raises `MaxConnectionsError`, which
looks like Redis being away: rate limits would fall back to per-process counts and the
caches to PostgreSQL in the middle of the burst. So a request waits, up to
`acquire_timeout`, for a connection to come free instead (a blocking pool, for one
server and for Sentinel). redis-py's asyncio cluster client has no blocking pool (a
node whose connections are all in use raises), so there the client itself lets at
most `max_connections - 2` commands and pipelines run at once, each using one
connection per node at most, and the others wait the same way (`_WaitingRedisCluster`):
of each node's `max_connections`, one is left for the invalidation listener and one
for the client's own refresh of its slot map.

Every key keystile writes carries a hash tag (`{...}`) naming its subject (an
account, an address, a cache key), and every script and transaction touches the keys
of one subject only, so each runs on one cluster slot. The cluster client is a
different class from `Redis` but offers the same commands keystile uses; it is typed
as `Redis` here, and `is_cluster` tells the few places that must act differently.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, cast
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

from keystile.errors import DependencyUnavailable

__all__ = [
    "REDIS_FAILURES",
    "close_redis",
    "create_redis",
    "is_cluster",
    "load_slot_map",
    "ping_redis",
    "redis_kind",
]

# What "Redis is not answering" looks like: redis-py's own errors (its connection and
# timeout errors included), socket errors, and asyncio deadlines (TimeoutError). The
# cluster client has errors of its own that are not `RedisError`: with every node
# down, loading the slot map (which it does again after any connection error) raises
# `RedisClusterException` ("cannot be connected"; "all slots are not covered"), and a
# key whose slot it cannot place raises `SlotNotCoveredError`, its subclass. Without
# them here a cluster outage was a 500 on every request, not S30's degraded service.
# The same class also reports client-side misuse (keys of one command in two slots),
# which keystile's hash tags rule out; should it happen, the circuits log it by name.
REDIS_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)

_SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def redis_kind(url: str, *, cluster: bool = False) -> str:
    """Return "sentinel", "cluster" or "single" for a `redis_url` (and `redis_cluster`)."""
    scheme = urlsplit(url).scheme
    if scheme in _SENTINEL_SCHEMES:
        return "sentinel"
    if scheme in _CLUSTER_SCHEMES or cluster:
        return "cluster"
    return "single"


def create_redis(
    url: str,
    *,
    socket_timeout: float,
    connect_timeout: float,
    max_connections: int,
    acquire_timeout: float,
    cluster: bool = False,
) -> Redis:
    """Return a pooled client that fails fast rather than retrying into the caller's deadline.

    A command waits up to `acquire_timeout` seconds for one of the `max_connections`
    connections to come free (see the module); after that it fails like Redis being away.
    """
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "max_connections": max_connections,
        "health_check_interval": 30,
        # keystile uses no maintenance notifications (Redis Enterprise's planned-failover
        # hints). redis-py 8.1 turns them on ("auto") with RESP3, and while they are on its
        # pool skips the check that finds a connection the server closed, so after a Redis
        # restart every pooled connection failed its next command (redis/redis-py#4252).
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }
    parts = urlsplit(url)
    kind = redis_kind(url, cluster=cluster)
    if kind == "sentinel":
        return _sentinel_master(parts, {**common, "timeout": acquire_timeout})
    if kind == "cluster":
        return _cluster(parts, common, acquire_timeout)
    pool = BlockingConnectionPool.from_url(
        url, retry=Retry(NoBackoff(), 0), timeout=acquire_timeout, **common
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the pool


def is_cluster(redis: Redis) -> bool:
    """True when `redis` is a Redis Cluster client (scripts then run one slot per call)."""
    return isinstance(redis, RedisCluster)


def _hosts(parts: SplitResult, default_port: int) -> list[tuple[str, int]]:
    netloc = parts.netloc.rpartition("@")[2]
    hosts = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        hosts.append((host.strip("[]") or "localhost", int(port) if port else default_port))
    return hosts


def _credentials(parts: SplitResult) -> dict[str, Any]:
    userinfo, at, _ = parts.netloc.rpartition("@")
    if not at:
        return {}
    user, colon, password = userinfo.partition(":")
    found: dict[str, Any] = {"password": unquote(password)} if colon else {}
    if user:
        found["username"] = unquote(user)
    return found


def _sentinel_master(parts: SplitResult, common: dict[str, Any]) -> Redis:
    path = [segment for segment in parts.path.split("/") if segment]
    if not path:
        raise ValueError("a redis+sentinel:// URL names its service: .../service-name[/db]")
    service = unquote(path[0])
    db = int(path[1]) if len(path) > 1 else 0
    ssl = _SENTINEL_SCHEMES[parts.scheme]
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        _hosts(parts, 26379),
        sentinel_kwargs={
            "socket_timeout": common["socket_timeout"],
            "socket_connect_timeout": common["socket_connect_timeout"],
        },
        socket_timeout=common["socket_timeout"],
    )
    # One retry: a connection error right after a failover re-asks the Sentinels for
    # the master; more would spend the caller's deadline.
    return cast(
        Redis,
        sentinel.master_for(
            service,
            connection_pool_class=_BlockingSentinelPool,
            db=db,
            ssl=ssl,
            retry=Retry(NoBackoff(), 1),
            **_credentials(parts),
            **common,
        ),
    )


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The Sentinel pool (it finds the master), waiting for a free connection when all
    are in use (`BlockingConnectionPool.get_connection`) instead of raising."""


def _cluster(parts: SplitResult, common: dict[str, Any], acquire_timeout: float) -> Redis:
    scheme = _CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)
    nodes = [ClusterNode(host, port) for host, port in _hosts(parts, 6379)]
    userinfo, at, hosts = parts.netloc.rpartition("@")
    first = urlunsplit((scheme, userinfo + at + hosts.split(",")[0], "", "", ""))
    options = dict(common)
    options.pop("health_check_interval")
    # One retry: a node that stopped answering (a failover) makes the client refresh its
    # slot map and try the new owner once; MOVED/ASK redirects are followed regardless.
    return cast(
        Redis,
        _WaitingRedisCluster.from_url(
            first,
            startup_nodes=nodes,
            retry=Retry(NoBackoff(), 1),
            acquire_timeout=acquire_timeout,
            **options,
        ),
    )


# Set while a task holds one of the cluster client's turns: what it runs inside (a
# pipeline retrying a redirected command one by one) uses the same turn.
_HOLDING_TURN: ContextVar[bool] = ContextVar("keystile_redis_cluster_turn", default=False)


class _WaitingRedisCluster(RedisCluster):
    """A cluster client whose commands wait up to `acquire_timeout` for a connection.

    At most `max_connections - 2` commands and pipelines run at once (at least one);
    a command past them waits its turn, and after `acquire_timeout` fails with
    redis-py's `ConnectionError`, as the blocking pools do.
    """

    def __init__(
        self, *, acquire_timeout: float, max_connections: int = 100, **kwargs: Any
    ) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._acquire_timeout = acquire_timeout
        self._turns = asyncio.Semaphore(max(1, max_connections - 2))
        # redis-py takes no connection class for the cluster's nodes: set it where the
        # nodes it finds read it, and on the startup nodes (made already, not connected).
        noticing = _NOTICING[self.connection_kwargs["connection_class"]]
        self.connection_kwargs["connection_class"] = noticing
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = noticing

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the client's turns (re-entered freely by the task holding one)."""
        if _HOLDING_TURN.get():
            yield
            return
        try:
            async with asyncio.timeout(self._acquire_timeout):
                await self._turns.acquire()
        except TimeoutError:
            raise RedisConnectionError(
                "no Redis connection came free within redis_acquire_timeout"
            ) from None
        token = _HOLDING_TURN.set(True)
        try:
            yield
        finally:
            _HOLDING_TURN.reset(token)
            self._turns.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises as redis-py does
        # redis-py's typing marks an attribute abstract that its own pipelines never set.
        return _WaitingClusterPipeline(self, transaction)  # type: ignore[abstract]


def _closed_by_server(connection: Connection) -> bool:
    reader = connection._reader  # the stream redis-py reads replies from
    return reader is not None and (reader.at_eof() or reader.exception() is not None)


# A cluster node gives a command the connection freed longest ago, without the check
# the one-server pool makes first (has the server closed it?). After a node restarted,
# every connection to it failed its next command; redis-py's one retry hid that, at
# the price of a reloaded slot map and every connection to every node recycled (a
# failed pipeline closes them all, in use or not, then sleeps 0.25 s). A node closes
# and reopens a connection that `should_reconnect` before a command uses it: these
# say so once the server has closed them too.
class _NoticingConnection(Connection):
    def should_reconnect(self) -> bool:
        marked = super().should_reconnect()  # type: ignore[no-untyped-call]
        return bool(marked) or _closed_by_server(self)


class _NoticingSSLConnection(_NoticingConnection, SSLConnection):
    """The same check, over TLS (SSLConnection's own setup, by the method order)."""


_NOTICING: dict[type[Connection], type[Connection]] = {
    Connection: _NoticingConnection,
    SSLConnection: _NoticingSSLConnection,
}


class _WaitingClusterPipeline(ClusterPipeline):
    """A cluster pipeline that runs in one of its client's turns."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = cast(_WaitingRedisCluster, self.cluster_client)
        async with client.turn():
            return await super().execute(raise_on_error, allow_redirections)


async def close_redis(redis: Redis) -> None:
    """Close `redis`'s connections, and those to the Sentinels it asked for the master."""
    await redis.aclose()
    manager = getattr(getattr(redis, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


async def load_slot_map(redis: Redis) -> None:
    """Load a cluster client's slot map now if the cluster answers (one server: nothing).

    A new cluster client sends the commands that arrive before its slot map is loaded
    to one node, which answers MOVED for the others' slots; after five redirects
    redis-py closes every connection, in use or not, and commands in flight fail (some
    with an AttributeError, not a Redis error). A cluster that does not answer is no
    reason not to start, as one server down at start is not: the first command loads
    the map instead.
    """
    if is_cluster(redis):
        with contextlib.suppress(*REDIS_FAILURES):
            await cast(RedisCluster, redis).initialize()


async def ping_redis(redis: Redis) -> None:
    """Raise `DependencyUnavailable` unless Redis answers PING (on a cluster, every master)."""
    try:
        if is_cluster(redis):
            # redis-py sends a cluster's PING to its default node only (one picked at
            # random): a master that is away (its slots served by no one, every command
            # soon refused by the others) would go unseen.
            await cast(RedisCluster, redis).ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await redis.ping()
    except REDIS_FAILURES as exc:
        raise DependencyUnavailable("redis") from exc
