"""keystile on a real Redis Cluster (3 masters) and a real Sentinel setup, unchanged.

Rate limits (GCRA scripts), the failed-login backoff, the login gate, cache
invalidation (the tombstone script and pub/sub), revocation and a login's second step
run on each. On the cluster every script touches one slot (keys of one subject share a
hash tag); the invalidation channel is plain PUBLISH, which the cluster broadcasts to
every node (the bundled Redis is 6.2: no sharded pub/sub). A Sentinel failover (the master
killed under requests) loses neither requests nor revocations.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from redis.asyncio import Redis
from redis.crc import key_slot

from keystile.app import create_app
from keystile.container import Overrides
from keystile.services.rate_limits import CounterKeys
from keystile.stores import create_redis
from keystile.stores.cache import CHANNEL, TieredCache
from keystile.stores.redis import is_cluster, redis_kind
from tests.support.backing import Backing, make_settings
from tests.support.http import (
    PASSWORD,
    Client,
    eventually_status,
    from_ip,
    login,
    logins_at_once,
    register,
    services_of,
    unique_email,
    unique_ip,
)
from tests.support.pools import commands_wait_for_a_connection, waits_end_at_the_acquire_timeout
from tests.support.tokens import bearer, error_code, new_user_tokens
from tests.support.topologies import RedisCluster, RedisSentinels
from tests.support.totp import Clock, code_at, enrolled_user, mfa_token

pytestmark = pytest.mark.slow

WRONG = "not the password"


@pytest.fixture(scope="module", name="redis_cluster")
def _redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster  # type: ignore[misc]


@pytest.fixture(scope="module", name="redis_sentinels")
def _redis_sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinels]:
    with RedisSentinels(tmp_path_factory.mktemp("sentinel"), sentinels=1) as sentinels:
        yield sentinels  # type: ignore[misc]


@pytest.fixture(params=["cluster", "cluster-flag", "sentinel"], name="topology")
def _topology(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that point keystile at one topology."""
    if request.param == "sentinel":
        sentinels: RedisSentinels = request.getfixturevalue("redis_sentinels")
        return {"redis_url": sentinels.url}
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    if request.param == "cluster-flag":
        return {"redis_url": cluster.plain_url, "redis_cluster": True}
    return {"redis_url": cluster.url}


async def _started(
    stack: AsyncExitStack, backing: Backing, overrides: Overrides | None = None, **settings: Any
) -> Quart:
    app = create_app(make_settings(backing, **settings), overrides=overrides)
    started: Quart = await stack.enter_async_context(app.test_app())  # type: ignore[arg-type]
    await asyncio.wait_for(services_of(started).caches.ready.wait(), timeout=10)
    return started


@pytest.fixture(name="two_apps")
async def _two_apps(
    backing: Backing, topology: dict[str, Any]
) -> AsyncIterator[tuple[Quart, Quart]]:
    # One deployment (one secret), two workers; local caches outlive the test, so only
    # an invalidation message can make the second worker refuse.
    settings = {
        **topology,
        "secret_key": "k" * 64,
        "session_cache_local_ttl_seconds": 60,
        "token_epoch_cache_seconds": 60,
    }
    async with AsyncExitStack() as stack:
        yield await _started(stack, backing, **settings), await _started(stack, backing, **settings)


async def _attempt(client: Client, email: str, password: str = WRONG, **kw: Any) -> int:
    response = await client.post("/v1/sessions", json={"email": email, "password": password}, **kw)
    return response.status_code


def test_urls_pick_the_client_redis_py_provides() -> None:
    assert redis_kind("redis://h:6379/0") == "single"
    assert redis_kind("rediss://h:6379/0") == "single"
    assert redis_kind("redis://h:6379/0", cluster=True) == "cluster"
    assert redis_kind("redis+cluster://a:1,b:2") == "cluster"
    assert redis_kind("redis+sentinel://a:26379,b:26379/keystile/0") == "sentinel"


def test_every_key_of_an_account_shares_one_cluster_slot() -> None:
    keys = CounterKeys(b"x" * 32)
    account, ip = "someone@example.com", "192.0.2.7"
    slots = {
        key_slot(key.encode())
        for key in (
            keys.key("known-client", account, ip),
            keys.key("rl:login:5/minute:account", account),
            keys.key("rl:login:5/minute:account+client", account, ip),
            keys.key("login-backoff:client", account, ip),
            keys.key("login-backoff:account", account),
            "keystile:credentials:" + keys.tag(account) + "0" * 32,
        )
    }
    assert len(slots) == 1


async def test_per_address_login_limit_holds(backing: Backing, topology: dict[str, Any]) -> None:
    # S27 on each topology: the GCRA script of the login gate (split per slot on a cluster).
    ip = unique_ip()
    async with AsyncExitStack() as stack:
        app = await _started(stack, backing, **topology, rate_limit_login_per_ip="3/minute")
        assert is_cluster(services_of(app).redis) == ("sentinel" not in topology["redis_url"])
        client = app.test_client()
        statuses = [await _attempt(client, unique_email(), **from_ip(ip)) for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


async def test_per_account_limit_holds_across_addresses(
    backing: Backing, topology: dict[str, Any]
) -> None:
    # S27: the per-account allowance is shared by every address, refused addresses spend none.
    email = unique_email()
    async with AsyncExitStack() as stack:
        app = await _started(
            stack,
            backing,
            **topology,
            trusted_proxy_hops=1,
            rate_limit_login_per_account="3/minute",
            rate_limit_login_per_ip="1/hour",
            login_backoff_client_free_failures=100,
            login_backoff_account_free_failures=100,
        )
        client = app.test_client()
        spent = unique_ip()
        first = await _attempt(client, email, headers={"X-Forwarded-For": spent})
        # This address is over its own limit now: its attempts must not spend the account's.
        refused = [
            await _attempt(client, email, headers={"X-Forwarded-For": spent}) for _ in range(3)
        ]
        others = [
            await _attempt(client, email, headers={"X-Forwarded-For": unique_ip()})
            for _ in range(3)
        ]
    assert first == 401
    assert refused == [429, 429, 429]
    assert others == [401, 401, 429]


async def test_failed_logins_back_off_and_a_known_client_logs_in(
    backing: Backing, topology: dict[str, Any]
) -> None:
    # S28: backoff scripts and the known-client mark, on the account's slot.
    email = unique_email()
    async with AsyncExitStack() as stack:
        app = await _started(
            stack,
            backing,
            **topology,
            login_backoff_client_free_failures=2,
            login_backoff_base_seconds=30,
        )
        client = app.test_client()
        await register(client, email)
        ip = unique_ip()
        assert await _attempt(client, email, PASSWORD, **from_ip(ip)) == 201
        assert await _attempt(client, email, PASSWORD, **from_ip(ip)) == 201  # warm, cached
        attacker = unique_ip()
        statuses = [await _attempt(client, email, **from_ip(attacker)) for _ in range(4)]
        assert statuses[:2] == [401, 401]
        assert statuses[-1] == 429
        # The owner's address is unaffected by the attacker's backoff.
        assert await _attempt(client, email, PASSWORD, **from_ip(ip)) == 201


async def test_the_second_step_takes_its_token_once_and_ends_the_code_backoff(
    backing: Backing, topology: dict[str, Any]
) -> None:
    # S42 on each topology: the token's GETDEL and the backoff's DEL (two slots on a
    # cluster) go out in one pipeline; the token is spent, the backoff ended.
    clock = Clock()
    async with AsyncExitStack() as stack:
        app = await _started(stack, backing, Overrides(mfa_clock=clock), **topology)
        _, email, secret, _ = await enrolled_user(app, clock)
        client = app.test_client()
        step = {"mfa_token": (await mfa_token(client, email, tokens=True))["mfa_token"]}
        right = code_at(secret, clock)
        wrong = await client.post("/v1/tokens/mfa", json={**step, "code": _other_than(right)})
        assert await error_code(wrong, 401) == "invalid_mfa_code"
        services = services_of(app)
        user = await services.users.select_user_by_email(email)
        assert user is not None
        secret_key = services.settings.read_secret_key()
        assert secret_key is not None
        backoff = CounterKeys(secret_key).key("mfa-backoff:account", str(user.id))
        assert await services.redis.exists(backoff) == 1
        done = await client.post("/v1/tokens/mfa", json={**step, "code": right})
        assert done.status_code == 200, await done.get_data(as_text=True)
        assert await services.redis.exists(backoff) == 0
        clock.step()  # a fresh code: only the token is spent
        again = await client.post("/v1/tokens/mfa", json={**step, "code": code_at(secret, clock)})
        assert await error_code(again, 401) == "invalid_mfa_token"


def _other_than(code: str) -> str:
    return "000000" if code != "000000" else "111111"


async def test_cluster_commands_beyond_the_pool_wait_for_a_connection(
    redis_cluster: RedisCluster,
) -> None:
    # S29 on a cluster: three connections per node, one turn for commands; fifty
    # commands and twenty pipelines at once each wait for it instead of failing.
    redis = _cluster_client(redis_cluster, max_connections=3, acquire_timeout=5)
    try:
        await commands_wait_for_a_connection(redis)
    finally:
        await redis.aclose()


async def test_a_cluster_command_that_waits_past_the_acquire_timeout_fails_like_an_outage(
    redis_cluster: RedisCluster,
) -> None:
    # S29: bounded, as on one server: the error is one the stores take for Redis away.
    redis = _cluster_client(redis_cluster, max_connections=3, acquire_timeout=0.1)
    try:
        await waits_end_at_the_acquire_timeout(redis)
    finally:
        await redis.aclose()


async def test_a_burst_of_logins_larger_than_the_cluster_pool_keeps_every_check_shared(
    backing: Backing, redis_cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    # S5, S27 on a cluster: twelve logins at once on the smallest pool; none finds
    # "Redis unavailable" (per-process limits, caches on PostgreSQL) mid-burst.
    async with AsyncExitStack() as stack:
        app = await _started(stack, backing, redis_url=redis_cluster.url, redis_pool_size=2)
        with caplog.at_level(logging.WARNING):
            statuses = await logins_at_once(app, 12)
    assert statuses == [200] * 12
    unavailable = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert unavailable == []


def _cluster_client(cluster: RedisCluster, **pool: Any) -> Redis:
    return create_redis(cluster.url, socket_timeout=2, connect_timeout=1, **pool)


async def test_ended_session_is_refused_by_the_other_worker(
    two_apps: tuple[Quart, Quart],
) -> None:
    # S9 on each topology: the invalidation script and its PUBLISH reach the other worker.
    first, second = two_apps
    email = unique_email()
    victim = first.test_client()
    await register(victim, email)
    response = await login(victim, email)
    assert response.status_code == 201
    cookie = response.headers["Set-Cookie"].split(";", 1)[0]
    replay = {"headers": {"Cookie": cookie}}
    elsewhere = second.test_client()
    assert (await elsewhere.get("/v1/me", **replay)).status_code == 200
    assert (await victim.delete("/v1/sessions/current")).status_code == 204
    await eventually_status(elsewhere, "/v1/me", 401, within=2.0, **replay)


async def test_an_invalidation_made_on_any_master_reaches_workers_listening_on_another(
    backing: Backing, redis_cluster: RedisCluster
) -> None:
    # Every worker's listener subscribes on the master that owns the channel's slot; the
    # invalidation script (and its PUBLISH) runs on the master that owns the key's slot.
    # Keys on every master prove the cluster carries each message across to the others.
    settings = {"redis_url": redis_cluster.url, "secret_key": "c" * 64}
    async with AsyncExitStack() as stack:
        first = await _started(stack, backing, **settings)
        second = await _started(stack, backing, **settings)
        listening = redis_cluster.owner(key_slot(CHANNEL.encode()))
        for server in redis_cluster.servers:
            [(_, subscribers)] = server.client().pubsub_numsub(CHANNEL)
            assert (subscribers >= 2) if server is listening else (subscribers == 0)

        namespace = f"probe-{uuid.uuid4().hex}"
        cache: TieredCache[str] = services_of(first).caches.tiered(
            namespace, encode=str, decode=str, local_ttl=60, redis_ttl=60
        )
        heard: list[str] = []
        services_of(second).caches.subscribe(namespace, lambda key: key and heard.append(key))
        keys: dict[int, str] = {}  # master's port -> a key whose slot it serves
        while len(keys) < len(redis_cluster.servers):
            key = uuid.uuid4().hex
            owner = redis_cluster.owner(key_slot(f"keystile:{namespace}:{{{key}}}".encode()))
            keys.setdefault(owner.port, key)
        assert len([port for port in keys if port != listening.port]) == 2

        for key in keys.values():
            await cache.invalidate(key)
            deadline = time.monotonic() + 5
            while key not in heard:
                assert time.monotonic() < deadline, f"{key} never reached the other worker"
                await asyncio.sleep(0.02)


async def test_logout_everywhere_ends_bearer_tokens_on_the_other_worker(
    two_apps: tuple[Quart, Quart],
) -> None:
    # S17 on each topology: the token epoch cache is invalidated through the cluster.
    first, second = two_apps
    one, two = first.test_client(), second.test_client()
    _, body = await new_user_tokens(one)
    token = body["access_token"]
    assert (await one.get("/v1/me", headers=bearer(token))).status_code == 200
    assert (await two.get("/v1/me", headers=bearer(token))).status_code == 200
    assert (await one.post("/v1/me/logout-everywhere", headers=bearer(token))).status_code == 204
    await eventually_status(two, "/v1/me", 401, within=2.0, headers=bearer(token))
    assert await error_code(await two.get("/v1/me", headers=bearer(token))) == "token_revoked"


async def test_sentinel_failover_keeps_requests_working_and_loses_no_revocation(
    backing: Backing, tmp_path: Path
) -> None:
    # S30 through a failover: the master is killed under requests; the Sentinels promote
    # the replica; requests go on (from caches, then PostgreSQL), and a revocation made
    # while Redis has no master is enforced on the other worker all the same.
    with RedisSentinels(tmp_path / "sentinel", sentinels=3) as sentinels:
        settings = {
            "redis_url": sentinels.url,
            "secret_key": "f" * 64,
            "token_epoch_cache_seconds": 1,
            "session_cache_local_ttl_seconds": 1,
        }
        async with AsyncExitStack() as stack:
            first = await _started(stack, backing, **settings)
            second = await _started(stack, backing, **settings)
            one, two = first.test_client(), second.test_client()
            _, kept = await new_user_tokens(one)
            _, revoked = await new_user_tokens(one)
            revoked_bearer = bearer(revoked["access_token"])
            # The epoch about to be revoked is cached on both workers, in Redis and on the
            # replica: once promoted, only the replayed invalidation can delete that copy.
            for client in (one, two):
                assert (await client.get("/v1/me", headers=revoked_bearer)).status_code == 200
            assert sentinels.master is not None
            replicated = await asyncio.to_thread(sentinels.master.client().wait, 1, 5000)
            assert replicated == 1
            statuses: list[int] = []
            stop = asyncio.Event()

            async def requests() -> None:
                while not stop.is_set():
                    for client in (one, two):
                        response = await client.get("/v1/me", headers=bearer(kept["access_token"]))
                        statuses.append(response.status_code)
                    await asyncio.sleep(0.01)

            load = asyncio.create_task(requests())
            await asyncio.sleep(0.3)
            await asyncio.to_thread(sentinels.kill_master)
            # While there is no master: log out everywhere on the first worker.
            response = await one.post("/v1/me/logout-everywhere", headers=revoked_bearer)
            assert response.status_code == 204
            await asyncio.to_thread(sentinels.wait_for_failover)
            await asyncio.sleep(1.0)  # requests go on against the new master
            stop.set()
            await load
            assert statuses
            assert set(statuses) == {200}, statuses
            await eventually_status(two, "/v1/me", 401, within=5.0, headers=revoked_bearer)
            # And it stays refused: the promoted replica's old copy of the epoch was
            # deleted when the first worker replayed its unpublished invalidation.
            settled = time.monotonic()
            while time.monotonic() - settled < 3.0:
                for client in (one, two):
                    response = await client.get("/v1/me", headers=revoked_bearer)
                    assert response.status_code == 401
                await asyncio.sleep(0.05)
            # Redis works again through the new master: a fresh login on each worker.
            email = unique_email()
            await register(one, email)
            assert (await login(two, email)).status_code == 201
