"""keystile through a real PgBouncer in transaction mode (`db_pgbouncer = true`).

The token, session and refresh-race suites run here unchanged, with every
connection of the app going through PgBouncer (the `backing` fixture is overridden;
the tests' own checks of the database still connect directly). PgBouncer refuses the
startup parameters keystile sends to PostgreSQL directly, and in transaction mode a
named prepared statement may be gone by the next transaction: with the setting,
keystile sends none and keeps no statement cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from keystile.repositories.database import create_pool
from keystile.runtime import migrate
from keystile.settings import Settings
from tests.support.backing import Backing
from tests.support.binaries import requires_binary
from tests.support.topologies import PgBouncer

# The suites, collected again here on the PgBouncer backing.
from tests.test_refresh_rotation import (  # noqa: F401
    test_refresh_of_an_expired_family_is_refused,
    test_refresh_tokens_expire_when_idle,
    test_reuse_after_the_grace_window_revokes_the_family,
    test_reuse_inside_the_grace_window_returns_the_same_successor,
    test_twenty_parallel_refreshes_yield_one_successor,
)
from tests.test_sessions_flow import *  # noqa: F403
from tests.test_token_flows import *  # noqa: F403

pytestmark = [pytest.mark.slow, requires_binary("pgbouncer", package="pgbouncer")]


@pytest.fixture(scope="module", name="backing")
def _through_bouncer(backing: Backing) -> Iterator[Backing]:
    with PgBouncer(backing.database_url) as bouncer:
        yield dataclasses.replace(
            backing,
            database_url=bouncer.url,
            pgbouncer=True,
            direct_database_url=backing.database_url,
        )


@pytest.fixture(name="db")
async def _db(backing: Backing) -> AsyncIterator[asyncpg.Connection]:
    # The tests' own look at the data: straight to PostgreSQL, not through the bouncer.
    connection = await asyncpg.connect(backing.direct_database_url)
    yield connection
    await connection.close()


async def test_pgbouncer_refuses_the_startup_parameters_sent_to_postgresql(
    backing: Backing,
) -> None:
    with pytest.raises(asyncpg.PostgresError, match="statement_timeout"):
        await create_pool(
            backing.database_url,
            size=1,
            connect_timeout=5,
            statement_timeout=5,
            statement_cache_size=0,
        )


async def test_with_the_setting_statements_run_through_pgbouncer_on_any_server_connection(
    backing: Backing,
) -> None:
    pool = await create_pool(
        backing.database_url,
        size=4,
        connect_timeout=5,
        statement_timeout=5,
        statement_cache_size=256,  # ignored: PgBouncer gets no statement cache
        pgbouncer=True,
    )
    try:
        for _ in range(50):
            async with pool.acquire() as connection:
                assert await connection.fetchval("SELECT $1::int + 1", 41) == 42
    finally:
        await pool.close()


async def test_migrations_run_through_pgbouncer_and_leave_no_lock_behind(backing: Backing) -> None:
    # A session-level advisory lock taken through PgBouncer would stay on a pooled server
    # connection and block every later migration (each `keystile serve` migrates) that
    # PgBouncer puts on another server connection.
    settings = Settings(
        database_url=backing.database_url, redis_url=backing.redis_url, db_pgbouncer=True
    )
    await _migrate_within(settings, 60)
    # Pin the server connection the last migration used (PgBouncer reuses the most recent
    # one), so the next migration runs on another server connection.
    pinned = await asyncpg.connect(backing.database_url, statement_cache_size=0)
    try:
        await pinned.execute("BEGIN")
        await pinned.fetchval("SELECT 1")
        await _migrate_within(settings, 20)
        await pinned.execute("ROLLBACK")
    finally:
        await pinned.close()


async def _migrate_within(settings: Settings, seconds: float) -> None:
    done = threading.Event()

    def run() -> None:
        migrate(settings)
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    await asyncio.to_thread(worker.join, seconds)
    assert done.is_set(), "a migration through PgBouncer is stuck on the migration lock"
