"""Fixtures: one real PostgreSQL and Redis per test process, a fresh app per test.

Set KEYSTILE_TEST_DATABASE_URL / KEYSTILE_TEST_REDIS_URL to use servers of your own;
otherwise embedded ones start under a temporary directory and are deleted after.
Tests isolate their data by using their own accounts (`tests.support.http.unique_email`),
so they can run in any order and in parallel. Helpers live in `tests/support/`;
tests import them from there, never from this file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from keystile.app import create_app
from keystile.container import Overrides
from keystile.embedded import EmbeddedPostgres, EmbeddedRedis
from keystile.extensions import Extension
from keystile.runtime import migrate
from keystile.settings import Settings
from tests.support.backing import (
    CATALOG,
    Backing,
    fresh_database,
    make_settings,
    private_postgres,
)
from tests.support.http import HttpsClient

MakeApp = Callable[..., Awaitable[Quart]]

# The real SMTP server (aiosmtpd) and mail helpers of the email tests; Debian binaries:
# skipped where missing (naming the package), a failure under CI=true.
pytest_plugins = ["tests.mail_support", "tests.support.binaries"]


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
        # The example extension's tables too: the catalogue and Varnish tests enable it.
        migrate(Settings(database_url=database_url, redis_url=redis_url, extensions=[CATALOG]))
        yield Backing(database_url, redis_url, postgres, data_dir)
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(name="settings")
def _settings(backing: Backing) -> Settings:
    return make_settings(backing)


@pytest.fixture(name="make_app")
async def _make_app(backing: Backing) -> AsyncIterator[MakeApp]:
    """Return `await make_app(overrides=..., extra_extensions=..., **settings)`: a started app.

    Settings are `make_settings`'s with the keyword arguments on top; every app made
    is shut down (its services closed) when the test ends.
    """
    async with AsyncExitStack() as stack:

        async def make(
            *,
            overrides: Overrides | None = None,
            extra_extensions: Iterable[Extension] = (),
            **settings: Any,
        ) -> Quart:
            app_settings = make_settings(backing, **settings)
            app = create_app(app_settings, overrides=overrides, extensions=extra_extensions)
            if app_settings.sessions.cookie_secure:
                app.test_client_class = HttpsClient  # Secure cookies need https requests
            return await stack.enter_async_context(app.test_app())  # type: ignore[return-value]

        yield make


@pytest.fixture(name="app")
async def _app(settings: Settings) -> AsyncIterator[Quart]:
    app = create_app(settings, overrides=Overrides())
    async with app.test_app() as test_app:
        yield test_app  # type: ignore[misc]


@pytest.fixture(name="client")
def _client(app: Quart) -> Client:
    return app.test_client()


@pytest.fixture(name="tmp_data_dir")
def _tmp_data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture(name="fresh_database")
def _fresh_database(backing: Backing) -> Iterator[str]:
    """An empty database of the test's own on the shared server, to migrate at will."""
    with fresh_database(backing) as url:
        yield url


@pytest.fixture(name="private_postgres")
def _private_postgres(tmp_path: Path, backing: Backing) -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A migrated embedded PostgreSQL of the test's own, to stop and start at will."""
    with private_postgres(tmp_path, backing) as started:
        yield started
