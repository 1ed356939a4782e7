"""Fixtures: one real PostgreSQL and Redis per test process, a fresh app per test.

Set KEYSTILE_TEST_DATABASE_URL / KEYSTILE_TEST_REDIS_URL to use servers of your own;
otherwise embedded ones start under a temporary directory and are deleted after.
Tests isolate their data by using their own accounts (see `unique_email`), so they
can run in any order and in parallel.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from keystile.app import create_app
from keystile.bootstrap import Overrides, Services
from keystile.embedded import EmbeddedPostgres, EmbeddedRedis
from keystile.runtime import migrate
from keystile.settings import Settings
from keystile.web.context import EXTENSION_KEY

# Cheap argon2id for speed; production parameters are tested where they matter.
CHEAP_ARGON2 = {"argon2_memory_kib": 64, "argon2_time_cost": 1, "argon2_parallelism": 1}

# Every test shares one Redis, and the test client has no socket address, so the
# production per-address limits would throttle unrelated tests against each other.
# Tests of the limits set their own and send from their own addresses (`from_ip`).
# Debian binaries: skipped where missing (naming the package), a failure under CI=true.
pytest_plugins = ("tests.support.binaries",)

ROOMY_IP_LIMITS = {
    f"rate_limit_{action}_per_ip": "100000/minute"
    for action in ("login", "token", "refresh", "register", "password_change")
}


@dataclass(frozen=True)
class Backing:
    database_url: str
    redis_url: str
    postgres: EmbeddedPostgres | None


@pytest.fixture(scope="session", name="backing")
def _backing() -> Iterator[Backing]:
    # A private directory, not pytest's tmp_path: pytest prunes old run directories of the
    # same user, which would delete a live server's data under a concurrent test run.
    data_dir = Path(tempfile.mkdtemp(prefix="keystile-test-"))
    postgres = redis = None
    database_url = os.environ.get("KEYSTILE_TEST_DATABASE_URL")
    redis_url = os.environ.get("KEYSTILE_TEST_REDIS_URL")
    try:
        if not database_url:
            postgres = EmbeddedPostgres(data_dir, delete_on_stop=True)
            database_url = postgres.start()
            # Durability is not under test here; speed is welcome.
            postgres.configure(fsync="off", synchronous_commit="off", full_page_writes="off")
        if not redis_url:
            redis = EmbeddedRedis(data_dir, persist=False)
            redis_url = redis.start()
        migrate(Settings(database_url=database_url, redis_url=redis_url))
        yield Backing(database_url, redis_url, postgres)
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def make_settings(backing: Backing, **overrides: Any) -> Settings:
    """Return test settings on the shared servers; keyword arguments override."""
    values: dict[str, Any] = {
        "database_url": backing.database_url,
        "redis_url": backing.redis_url,
        "secret_key": secrets.token_hex(32),
        "cookie_secure": False,
        "db_pool_size": 3,
        "hash_threads": 2,
        **CHEAP_ARGON2,
        **ROOMY_IP_LIMITS,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(name="settings")
def _settings(backing: Backing) -> Settings:
    return make_settings(backing)


@pytest.fixture(name="app")
async def _app(settings: Settings) -> AsyncIterator[Quart]:
    app = create_app(settings, overrides=Overrides())
    async with app.test_app() as test_app:
        yield test_app  # type: ignore[misc]


@pytest.fixture(name="client")
def _client(app: Quart) -> Client:
    return app.test_client()


def unique_email() -> str:
    """Return an email no other test uses."""
    return f"user-{uuid.uuid4().hex}@example.com"


def unique_ip() -> str:
    """Return a client address no other test uses (IPv6 documentation range)."""
    groups = uuid.uuid4().hex[:24]
    return "2001:db8:" + ":".join(groups[i : i + 4] for i in range(0, 24, 4))


def from_ip(ip: str) -> dict[str, Any]:
    """Keyword arguments for a test-client request that arrives from socket address `ip`."""
    return {"scope_base": {"client": (ip, 40000)}}


PASSWORD = "correct horse battery staple"


async def register(client: Client, email: str, password: str = PASSWORD) -> None:
    response = await client.post("/v1/users", json={"email": email, "password": password})
    assert response.status_code == 202, await response.get_data(as_text=True)


async def login(client: Client, email: str, password: str = PASSWORD) -> Any:
    return await client.post("/v1/sessions", json={"email": email, "password": password})


async def eventually_status(
    client: Client, path: str, status: int, *, within: float, **request: Any
) -> float:
    """GET `path` until it answers `status`; fail if that takes longer than `within` seconds.

    For changes that reach other workers asynchronously (cache invalidation by pub/sub).
    Returns how long it took.
    """
    started = time.monotonic()
    while True:
        response = await client.get(path, **request)
        elapsed = time.monotonic() - started
        if response.status_code == status:
            return elapsed
        assert elapsed < within, f"{path} still answers {response.status_code} after {within} s"
        await asyncio.sleep(0.01)


@pytest.fixture(name="tmp_data_dir")
def _tmp_data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


def services_of(app: Quart) -> Services:
    """Return the services of a started app (the `app` fixture, or `app.test_app()`)."""
    return getattr(app, "app", app).extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
