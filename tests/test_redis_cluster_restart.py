"""A Redis Cluster master restarted on its port is not taken for an outage (S30).

A restart closes every connection the worker's cluster client holds to that node.
redis-py's cluster client gave the next command such a connection without asking
whether the server had closed it; the command failed, and redis-py's one retry hid
that by reloading the slot map and recycling every connection to every node (a failed
pipeline closes them all, in use or not). The client must instead notice the closed
connections and open them again before a command uses them, as the one-server pool
does (tests/test_redis_pool.py), and the stores must see no failure at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from quart import Quart
from redis.asyncio import Redis
from redis.crc import key_slot

from keystile.app import create_app
from keystile.stores import create_redis
from tests.support.backing import Backing, make_settings
from tests.support.http import logins_at_once, services_of, unique_email
from tests.support.topologies import RedisCluster

pytestmark = pytest.mark.slow


@pytest.fixture(name="cluster")
def _cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    # A cluster of the test's own: a node is restarted, losing its keys.
    with RedisCluster(tmp_path / "cluster") as cluster:
        yield cluster  # type: ignore[misc]


def _keys_on(cluster: RedisCluster, port: int, count: int) -> list[str]:
    """`count` hash-tagged keys (as keystile writes them) on the master on `port`."""
    keys: list[str] = []
    while len(keys) < count:
        key = f"restart:{{{unique_email()}}}"
        if cluster.owner(key_slot(key.encode())).port == port:
            keys.append(key)
    return keys


def _connections_received(nodes: list[sync_redis.Redis]) -> list[int]:
    """How many connections each node has accepted (`nodes`: a client of each, connected)."""
    return [int(node.info("stats")["total_connections_received"]) for node in nodes]


async def test_a_restarted_master_s_closed_connections_are_replaced_before_a_command_uses_them(
    cluster: RedisCluster,
) -> None:
    redis = create_redis(
        cluster.url, socket_timeout=2, connect_timeout=2, max_connections=10, acquire_timeout=2
    )
    restarted, *others = cluster.servers
    keys = _keys_on(cluster, restarted.port, 8)
    elsewhere = [key for other in others for key in _keys_on(cluster, other.port, 2)]
    watching = [other.client() for other in others]
    try:
        # The slot map loaded, as a worker's invalidation listener does when it starts.
        await redis.initialize()
        # Eight connections to the master about to restart, all idle; some to the others.
        await asyncio.gather(*(redis.blpop([key], timeout=0.1) for key in keys))
        await asyncio.gather(*(redis.get(key) for key in elsewhere))
        # Restarted on its port while the worker's event loop runs (it reads the closes).
        await asyncio.to_thread(cluster.restart, restarted)
        before = await asyncio.to_thread(_connections_received, watching)

        async def pipelined(key: str) -> list[Any]:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.incr(key).get(key)
                return list(await pipe.execute())

        # Eight at once: each is given one of the eight connections the restart closed.
        answers = await asyncio.gather(
            *(redis.set(key, 1) for key in keys[:4]),
            *(pipelined(key) for key in keys[4:]),
            return_exceptions=True,
        )
        assert [answer for answer in answers if isinstance(answer, BaseException)] == []
        assert answers == [True] * 4 + [[1, b"1"]] * 4
        # No command failed and was retried: a failure makes redis-py refresh its slot map
        # and reconnect to every master, and the others would have seen new connections.
        after = await asyncio.to_thread(_connections_received, watching)
        assert after == before
        assert await asyncio.gather(*(redis.get(key) for key in elsewhere)) == [None] * 4
    finally:
        await redis.aclose()
        for client in watching:
            client.close()


async def _started(stack: AsyncExitStack, backing: Backing, **settings: Any) -> Quart:
    app = create_app(make_settings(backing, **settings))
    started: Quart = await stack.enter_async_context(app.test_app())  # type: ignore[arg-type]
    await asyncio.wait_for(services_of(started).caches.ready.wait(), timeout=10)
    return started


async def test_logins_right_after_a_master_restarts_find_redis_available(
    backing: Backing, cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    # S30 through keystile's stores: rate limits, backoff and caches on the cluster, a
    # master restarted between two bursts of logins. Every login of the second burst
    # is answered with Redis (no "redis unavailable": no per-process limits, no
    # caches on PostgreSQL, no circuit left open for its retry interval).
    async with AsyncExitStack() as stack:
        app = await _started(stack, backing, redis_url=cluster.url, redis_pool_size=10)
        assert await logins_at_once(app, 8) == [200] * 8
        await asyncio.to_thread(cluster.restart, cluster.servers[0])
        with caplog.at_level(logging.WARNING):
            statuses = await logins_at_once(app, 8)
            statuses += await logins_at_once(app, 8)
    assert statuses == [200] * 16
    unavailable = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert unavailable == []


async def test_a_restarted_master_rejoins_with_its_slots(cluster: RedisCluster) -> None:
    # The helper above relies on this: same port, same node id, same slots.
    redis: Redis = create_redis(
        cluster.url, socket_timeout=2, connect_timeout=2, max_connections=4, acquire_timeout=2
    )
    node = cluster.servers[1]
    node_id = node.client().cluster("myid")
    try:
        restarted = await asyncio.to_thread(cluster.restart, node)
        assert restarted.port == node.port
        assert restarted.client().cluster("myid") == node_id
        key = _keys_on(cluster, node.port, 1)[0]
        assert await redis.set(key, "v")
        assert await asyncio.to_thread(restarted.client().get, key) == b"v"
    finally:
        await redis.aclose()
