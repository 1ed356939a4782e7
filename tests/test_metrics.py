"""/metrics: what operators watch, by route template, login outcome, hashing and caches."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from threading import Event

import pytest
from prometheus_client import REGISTRY, Counter
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from keystile import metrics
from keystile.app import create_app
from keystile.errors import Overloaded
from keystile.services import Argon2Parameters, PasswordHasher
from keystile.stores.cache import TieredCache
from tests.support.backing import Backing, make_settings
from tests.support.http import PASSWORD, Client, from_ip, login, register, unique_email, unique_ip
from tests.support.tokens import new_user_tokens, refresh
from tests.support.waiting import eventually


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


async def _scrape(client: Client, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.get_data(as_text=True)):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


async def test_request_latency_is_labelled_by_route_template_and_status(client: Client) -> None:
    name = "keystile_http_request_duration_seconds_count"
    me_before = _value(name, method="GET", route="/v1/me", status="401")
    unmatched_before = _value(name, method="GET", route="<unmatched>", status="404")
    secret_path = f"/nothing-here/{uuid.uuid4().hex}"

    assert (await client.get("/v1/me")).status_code == 401
    assert (await client.get(secret_path)).status_code == 404

    samples = await _scrape(client)
    counts = samples[name]
    assert counts[(("method", "GET"), ("route", "/v1/me"), ("status", "401"))] == me_before + 1
    unmatched = (("method", "GET"), ("route", "<unmatched>"), ("status", "404"))
    assert counts[unmatched] == unmatched_before + 1
    # Raw paths never become labels: unbounded label values would sink Prometheus.
    assert not any(secret_path in value for key in counts for _, value in key)


async def test_logins_are_counted_by_outcome(client: Client) -> None:
    email = unique_email()
    await register(client, email)
    before = {
        outcome: _value("keystile_logins_total", outcome=outcome)
        for outcome in ("success", "wrong_password", "unknown_account")
    }
    assert (await login(client, email)).status_code == 201
    assert (await login(client, email, PASSWORD + "!")).status_code == 401
    assert (await login(client, unique_email())).status_code == 401
    assert (await login(client, unique_email())).status_code == 401

    samples = await _scrape(client)
    logins = samples["keystile_logins_total"]
    assert logins[(("outcome", "success"),)] == before["success"] + 1
    assert logins[(("outcome", "wrong_password"),)] == before["wrong_password"] + 1
    assert logins[(("outcome", "unknown_account"),)] == before["unknown_account"] + 2


def _occupy_the_hashing_thread(hasher: PasswordHasher) -> tuple[asyncio.Future[str], Event]:
    """Start a job that holds the hasher's thread until the returned event is set."""
    release = Event()

    def blocked(_: str) -> str:
        release.wait(timeout=30)
        return "done"

    # Through the same admission path as a hash, so it is counted like one.
    return asyncio.ensure_future(hasher._run("hash", blocked, None, "")), release


def _one_thread_hasher(*, budget: float, mean_hash_seconds: float) -> PasswordHasher:
    """A cheap hasher with one thread, whose admission starts from `mean_hash_seconds`."""
    return PasswordHasher(
        Argon2Parameters(memory_kib=64, time_cost=1),
        threads=1,
        budget=budget,
        mean_hash_seconds=mean_hash_seconds,
    )


async def test_hash_queue_depth_wait_time_and_admission_rejections_are_measured() -> None:
    # One thread and a budget of 1.5 hash times: one hash may wait, a third concurrent
    # hash would wait 2 hash times and is refused at once (S5).
    hasher = _one_thread_hasher(budget=1.5, mean_hash_seconds=1.0)
    depth = _value("keystile_hash_queue_depth")
    running = _value("keystile_hashes_in_progress")
    waits = _value("keystile_hash_wait_seconds_count")
    rejections = _value("keystile_hash_rejections_total")
    try:
        first, release = _occupy_the_hashing_thread(hasher)
        await eventually(lambda: _value("keystile_hashes_in_progress") == running + 1)
        second = asyncio.ensure_future(hasher.hash("second password"))
        await eventually(lambda: _value("keystile_hash_queue_depth") == depth + 1)
        with pytest.raises(Overloaded):
            await hasher.hash("third password")
        assert _value("keystile_hash_rejections_total") == rejections + 1
        release.set()
        await asyncio.gather(first, second)
    finally:
        hasher.close()
    assert _value("keystile_hash_queue_depth") == depth
    assert _value("keystile_hashes_in_progress") == running
    assert _value("keystile_hash_wait_seconds_count") == waits + 2
    assert _value("keystile_hash_duration_seconds_count", operation="hash") >= 2


async def test_hashing_cpu_is_counted_apart_from_time_a_hash_spends_off_the_cpu() -> None:
    hasher = _one_thread_hasher(budget=10.0, mean_hash_seconds=0.01)

    def spin(_: str) -> None:
        until = time.thread_time() + 0.05
        while time.thread_time() < until:
            pass

    def wait(_: str) -> None:
        time.sleep(0.3)

    def counted() -> float:
        return _value("keystile_hash_cpu_seconds_total", operation="verify")

    try:
        before = counted()
        await hasher._run("verify", spin, None, "")
        spun = counted() - before
        await hasher._run("verify", wait, None, "")
        waited = counted() - before - spun
    finally:
        hasher.close()
    assert spun >= 0.05
    assert waited < 0.05


async def test_a_cancelled_waiting_hash_leaves_the_queue_gauge() -> None:
    hasher = _one_thread_hasher(budget=2.5, mean_hash_seconds=1.0)
    depth = _value("keystile_hash_queue_depth")
    try:
        first, release = _occupy_the_hashing_thread(hasher)
        second = asyncio.ensure_future(hasher.hash("second password"))
        await eventually(lambda: _value("keystile_hash_queue_depth") == depth + 1)
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)
        assert _value("keystile_hash_queue_depth") == depth
        release.set()
        await first
    finally:
        hasher.close()


async def test_tiered_cache_counts_local_hits_redis_hits_and_misses(backing: Backing) -> None:
    namespace = f"metrics-{uuid.uuid4().hex}"
    redis = Redis.from_url(backing.redis_url)
    caches = [
        TieredCache[str](namespace, redis, encode=str, decode=str, local_ttl=30, redis_ttl=30)
        for _ in range(2)
    ]

    async def load() -> str:
        return "value"

    try:
        assert await caches[0].get("key", load) == "value"  # miss: loaded
        assert await caches[0].get("key", load) == "value"  # local hit
        assert await caches[1].get("key", load) == "value"  # another worker: Redis hit
    finally:
        await redis.aclose()
    for result in ("miss", "local_hit", "redis_hit"):
        assert _value("keystile_cache_lookups_total", cache=namespace, result=result) == 1


async def test_pool_occupancy_is_exported(client: Client) -> None:
    samples = await _scrape(client)
    db = samples["keystile_db_pool_connections"]
    # make_settings uses a fixed pool of 3 connections per worker.
    assert db[(("state", "idle"),)] + db[(("state", "in_use"),)] == 3
    assert (("state", "idle"),) in samples["keystile_redis_pool_connections"]


async def test_every_documented_metric_is_exported(client: Client) -> None:
    response = await client.get("/metrics")
    text = await response.get_data(as_text=True)
    for metric in (
        metrics.HTTP_REQUEST_DURATION,
        metrics.HTTP_REQUESTS_IN_PROGRESS,
        metrics.LOGINS,
        metrics.RATE_LIMITED,
        metrics.REFRESH_REUSE_DETECTED,
        metrics.HASH_QUEUE_DEPTH,
        metrics.HASHES_IN_PROGRESS,
        metrics.HASH_WAIT,
        metrics.HASH_DURATION,
        metrics.HASH_CPU,
        metrics.HASH_REJECTIONS,
        metrics.CACHE_LOOKUPS,
        metrics.DB_POOL_CONNECTIONS,
        metrics.REDIS_POOL_CONNECTIONS,
    ):
        name = metric.describe()[0].name
        assert f"# HELP {name}" in text, name


def test_every_metric_keystile_exports_is_documented() -> None:
    pages = Path(__file__).resolve().parents[1] / "docs"
    docs = "\n".join(page.read_text() for page in pages.glob("*.md"))
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        name = value.describe()[0].name
        exposed = f"{name}_total" if isinstance(value, Counter) else name
        assert f"`{exposed}" in docs or f"{exposed}`" in docs, exposed


async def test_rate_limit_refusals_are_counted_by_limit(backing: Backing) -> None:
    before = _value("keystile_rate_limited_total", limit="login_per_ip")
    app = create_app(make_settings(backing, rate_limit_login_per_ip="2/minute"))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        ip = unique_ip()
        body = {"email": unique_email(), "password": PASSWORD}
        statuses = [
            (await client.post("/v1/sessions", json=body, **from_ip(ip))).status_code
            for _ in range(3)
        ]
    assert statuses == [401, 401, 429]
    assert _value("keystile_rate_limited_total", limit="login_per_ip") == before + 1


async def test_refresh_token_reuse_detections_are_counted(backing: Backing) -> None:
    before = _value("keystile_refresh_reuse_detected_total")
    app = create_app(make_settings(backing, refresh_reuse_grace_seconds=0))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        _, body = await new_user_tokens(client)
        assert (await refresh(client, body["refresh_token"])).status_code == 200
        await asyncio.sleep(0.05)
        assert (await refresh(client, body["refresh_token"])).status_code == 401
    assert _value("keystile_refresh_reuse_detected_total") == before + 1


async def test_metrics_token_is_required_when_configured(backing: Backing) -> None:
    token = "m" * 40
    app = create_app(make_settings(backing, metrics_token=token))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})
        assert wrong.status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": token})).status_code == 401
        right = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert right.status_code == 200
        assert "keystile_logins_total" in await right.get_data(as_text=True)


def test_a_forked_child_writes_its_metrics_to_its_own_files(tmp_path: Path) -> None:
    # In multiprocess mode the process id is asked once, not per update; a forked child
    # must still write under its own id, or two processes would overwrite one file.
    script = textwrap.dedent(
        """
        import os, sys
        from keystile import metrics
        metrics.HASH_REJECTIONS.inc()
        child = os.fork()
        if child == 0:
            metrics.HASH_REJECTIONS.inc()
            os._exit(0)
        os.waitpid(child, 0)
        print(os.getpid(), child)
        """
    )
    env = {**os.environ, metrics.MULTIPROC_ENV: str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    parent, child = done.stdout.split()
    written = {path.name for path in tmp_path.glob("counter_*.db")}
    assert written == {f"counter_{parent}.db", f"counter_{child}.db"}
