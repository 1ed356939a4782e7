"""A read replica (`database_read_url`): lag-tolerant reads go there, security reads do not.

A real streaming replica: a second PostgreSQL made with `pg_basebackup -R` from a
private embedded primary and started as a hot standby. The login's user lookup by
email (on a cache miss) and the periodic signing-key reload behind the JWKS read the
replica; refresh rotation, revocation, session validity and key rotation read (and
write) the primary, which the read-only replica could not serve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from keystile.app import create_app
from keystile.repositories import PostgresSigningKeyRepository
from keystile.services.keys import SecretBox, generate_signing_key
from tests.support.backing import Backing, make_settings, private_postgres
from tests.support.http import login, register, services_of, unique_email
from tests.support.tokens import bearer, grant, refresh
from tests.support.topologies import StreamingReplica

pytestmark = pytest.mark.slow


@pytest.fixture(name="primary_and_replica")
def _primary_and_replica(tmp_path: Path, backing: Backing) -> Iterator[tuple[str, str]]:
    with private_postgres(tmp_path, backing) as (_, url), StreamingReplica(url) as replica:
        yield url, replica.url


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
        # Nothing but the lag-tolerant reads ever ran on the replica.
        assert on_replica
        assert all(
            "FROM users WHERE lower(email)" in query or _KEY_RELOAD in query for query in on_replica
        ), on_replica


# The key ring's reload (`select_live_keys`); rotations and the first key are written apart.
_KEY_RELOAD = (
    "FROM signing_keys WHERE secret_fingerprint = ANY($1::bytea[]) AND (retired_at IS NULL"
)


async def test_jwks_reloads_from_the_replica_a_key_written_on_the_primary(
    backing: Backing, primary_and_replica: tuple[str, str]
) -> None:
    primary, replica = primary_and_replica
    settings = make_settings(
        backing, database_url=primary, database_read_url=replica, signing_key_refresh_seconds=0.2
    )
    async with create_app(settings).test_app() as app:
        services = services_of(app)
        # After the listener's first connection, whose reload reads the primary.
        await asyncio.wait_for(services.caches.ready.wait(), timeout=10)
        reloads = {"replica": 0, "primary": 0}

        def counted(where: str) -> Callable[[Any], None]:
            def logged(query: Any) -> None:
                if _KEY_RELOAD in query.query:
                    reloads[where] += 1

            return logged

        services.database.reads.add_query_logger(counted("replica"))
        services.database.add_query_logger(counted("primary"))
        client = app.test_client()
        signing = services.key_ring.signing_key().kid

        # A rotation written on the primary by another process, with no rotation message
        # (as if it was lost): only the periodic reload, on the replica, can find it.
        box = SecretBox(settings.read_secret_key())
        record = generate_signing_key(settings.tokens.algorithm, box)
        scheduled = await PostgresSigningKeyRepository(services.database).insert_next_key(
            box.fingerprints,
            record,
            promote_after=timedelta(hours=1),
            retire_after=timedelta(hours=2),
        )
        assert scheduled is not None

        deadline = time.monotonic() + 20
        while True:
            response = await client.get("/.well-known/jwks.json")
            assert response.status_code == 200
            kids = [key["kid"] for key in (await response.get_json())["keys"]]
            if record.kid in kids:
                break
            assert time.monotonic() < deadline, "the replica never served the new key"
            await asyncio.sleep(0.1)
        assert kids == [signing, record.kid]  # current, then next (S19)
        assert reloads["replica"] > 0
        assert reloads["primary"] == 0
        # Signing stays with the current key until the new one's time comes.
        assert services.key_ring.signing_key().kid == signing
        email = unique_email()
        await register(client, email)
        deadline = time.monotonic() + 10
        while (granted := await grant(client, email)).status_code != 200:
            assert granted.status_code == 401  # the replica lags the registration
            assert time.monotonic() < deadline, "the replica never caught up"
            await asyncio.sleep(0.1)
        access = (await granted.get_json())["access_token"]
        assert (await client.get("/v1/me", headers=bearer(access))).status_code == 200


async def test_a_lagging_replica_never_takes_back_a_rotation_read_from_the_primary(
    backing: Backing, primary_and_replica: tuple[str, str]
) -> None:
    primary, replica = primary_and_replica
    settings = make_settings(
        backing, database_url=primary, database_read_url=replica, signing_key_refresh_seconds=0.2
    )
    async with create_app(settings).test_app() as app:
        services = services_of(app)
        client = app.test_client()
        current = services.key_ring.signing_key().kid
        standby = await asyncpg.connect(replica)
        try:
            # Replication stopped: the replica lags this rotation for as long as it takes.
            await standby.execute("SELECT pg_wal_replay_pause()")
            deadline = time.monotonic() + 10
            while await standby.fetchval("SELECT pg_get_wal_replay_pause_state()") != "paused":
                assert time.monotonic() < deadline, "WAL replay never paused"
                await asyncio.sleep(0.05)
            reloads = 0

            def counted(query: Any) -> None:
                nonlocal reloads
                reloads += _KEY_RELOAD in query.query

            services.database.reads.add_query_logger(counted)
            # The worker that rotates reads the primary at once (S19: next key published).
            rotated, _ = await services.key_ring.rotate(
                promote_after=timedelta(hours=1), retire_after=timedelta(hours=2)
            )
            deadline = time.monotonic() + 20
            while reloads < 5:  # periodic reloads from the replica, which lacks the rotation
                response = await client.get("/.well-known/jwks.json")
                kids = [key["kid"] for key in (await response.get_json())["keys"]]
                assert kids == [current, rotated.kid]
                assert time.monotonic() < deadline, "no reload from the replica"
                await asyncio.sleep(0.1)
            missing = "SELECT count(*) FROM signing_keys WHERE kid = $1"
            assert await standby.fetchval(missing, rotated.kid) == 0
            # The retirement the rotation scheduled is kept too.
            kept = services.key_ring.verification_key(current)
            assert kept is not None
            assert kept.retired_at is not None
        finally:
            await standby.execute("SELECT pg_wal_replay_resume()")
            await standby.close()
