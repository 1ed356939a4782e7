"""A read replica (`database_read_url`): lag-tolerant reads go there, security reads do not.

A real streaming replica: a second PostgreSQL made with `pg_basebackup -R` from a
private embedded primary and started as a hot standby. The login's user lookup by
email (on a cache miss) reads the replica; refresh rotation, revocation and session
validity read (and write) the primary, which the read-only replica could not serve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keystile.app import create_app
from keystile.embedded import EmbeddedPostgres
from keystile.runtime import migrate
from keystile.settings import Settings
from tests.support.backing import Backing, make_settings
from tests.support.http import login, register, services_of, unique_email
from tests.support.tokens import bearer, grant, refresh
from tests.support.topologies import StreamingReplica

pytestmark = pytest.mark.slow


@pytest.fixture(name="primary_and_replica")
def _primary_and_replica(tmp_path: Path, backing: Backing) -> Iterator[tuple[str, str]]:
    postgres = EmbeddedPostgres(tmp_path, delete_on_stop=True)
    url = postgres.start()
    try:
        migrate(Settings(database_url=url, redis_url=backing.redis_url))
        with StreamingReplica(url) as replica:
            yield url, replica.url
    finally:
        postgres.stop()


async def test_user_lookups_read_the_replica_and_security_decisions_the_primary(
    backing: Backing, primary_and_replica: tuple[str, str]
) -> None:
    primary, replica = primary_and_replica
    settings = make_settings(backing, database_url=primary, database_read_url=replica)
    async with create_app(settings).test_app() as app:
        services = services_of(app)
        assert services.database.reads is not services.database
        on_replica: list[str] = []

        def logged(query: Any) -> None:
            on_replica.append(query.query)

        services.database.reads.add_query_logger(logged)
        client = app.test_client()
        email = unique_email()
        await register(client, email)
        # The replica may lag the registration by a moment: the login is retried.
        deadline = time.monotonic() + 10
        while (response := await login(client, email)).status_code != 201:
            assert response.status_code == 401
            assert time.monotonic() < deadline, "the replica never caught up"
            await asyncio.sleep(0.1)
        assert any("lower(email)" in query for query in on_replica)

        granted = await grant(client, email)
        assert granted.status_code == 200
        body = await granted.get_json()
        rotated = await refresh(client, body["refresh_token"])
        assert rotated.status_code == 200
        access = (await rotated.get_json())["access_token"]
        assert (await client.get("/v1/me", headers=bearer(access))).status_code == 200
        assert (
            await client.post("/v1/me/logout-everywhere", headers=bearer(access))
        ).status_code == 204
        assert (await client.get("/v1/me", headers=bearer(access))).status_code == 401
        assert (await client.get("/v1/me")).status_code == 401  # the session ended too
        # Nothing but the lag-tolerant lookup ever ran on the replica.
        assert on_replica
        assert all("FROM users WHERE lower(email)" in query for query in on_replica), on_replica
