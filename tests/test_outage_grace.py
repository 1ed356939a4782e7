"""A PostgreSQL outage longer than the caches' lifetimes (S31): reads go on for the grace.

Authenticated requests (cookie and bearer) keep working from the copies kept in Redis
for `db_outage_grace_seconds`, long after the shared copies' own TTL, and answer 503
once the grace is spent. A revocation that reached Redis before the outage deletes
those copies too, so it is never undone. Small TTLs stand in for production's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keystile.app import create_app
from keystile.embedded import EmbeddedPostgres
from tests.support.backing import Backing, make_settings, private_postgres
from tests.support.http import login, register, unique_email
from tests.support.tokens import bearer, new_user_tokens

pytestmark = pytest.mark.slow

_REDIS_TTL = 1.0
_GRACE = 4.0


@pytest.fixture(name="private_postgres")
def _private_postgres(tmp_path: Path, backing: Backing) -> Iterator[tuple[EmbeddedPostgres, str]]:
    with private_postgres(tmp_path, backing) as started:
        yield started


async def test_authenticated_reads_outlive_the_cache_ttls_for_the_grace_then_503(
    backing: Backing, private_postgres: tuple[EmbeddedPostgres, str]
) -> None:
    postgres, url = private_postgres
    settings = make_settings(
        backing,
        database_url=url,
        db_acquire_timeout=0.5,
        db_connect_timeout=0.5,
        db_outage_grace_seconds=_GRACE,
        session_cache_local_ttl_seconds=0.2,
        session_cache_redis_ttl_seconds=_REDIS_TTL,
        session_touch_interval_seconds=1,
        token_epoch_cache_seconds=0.2,
        token_epoch_redis_seconds=_REDIS_TTL,
    )
    async with create_app(settings).test_app() as app:
        cookie_client = app.test_client()
        email = unique_email()
        await register(cookie_client, email)
        assert (await login(cookie_client, email)).status_code == 201
        tokens_client = app.test_client()
        _, tokens = await new_user_tokens(tokens_client)
        access = bearer(tokens["access_token"])

        # Revoked before the outage: a logged-out cookie and a logged-out-everywhere token.
        ended = app.test_client()
        ended_email = unique_email()
        await register(ended, ended_email)
        ended_login = await login(ended, ended_email)
        replay = {"Cookie": ended_login.headers["Set-Cookie"].split(";", 1)[0]}
        _, revoked_tokens = await new_user_tokens(app.test_client())
        revoked = bearer(revoked_tokens["access_token"])
        for client, headers in ((ended, replay), (tokens_client, revoked)):
            assert (await client.get("/v1/me", headers=headers)).status_code == 200
        assert (await ended.delete("/v1/sessions/current")).status_code == 204
        assert (
            await tokens_client.post("/v1/me/logout-everywhere", headers=revoked)
        ).status_code == 204

        assert (await cookie_client.get("/v1/me")).status_code == 200
        assert (await tokens_client.get("/v1/me", headers=access)).status_code == 200
        postgres.pause()
        try:
            # Past every TTL of the shared copies (and the local ones), within the grace.
            started = time.monotonic()
            while time.monotonic() - started < 3 * _REDIS_TTL:
                cookie = await cookie_client.get("/v1/me")
                assert cookie.status_code == 200, await cookie.get_data(as_text=True)
                token = await tokens_client.get("/v1/me", headers=access)
                assert token.status_code == 200, await token.get_data(as_text=True)
                for headers in (replay, revoked):
                    refused = await app.test_client().get("/v1/me", headers=headers)
                    assert refused.status_code in (401, 503)
                await asyncio.sleep(0.1)

            # Past the grace: 503, never an answer from state older than the grace allows.
            deadline = time.monotonic() + _GRACE + 2 * _REDIS_TTL + 5
            statuses: set[int] = set()
            while statuses != {503}:
                assert time.monotonic() < deadline, f"still answering {statuses} past the grace"
                cookie = await cookie_client.get("/v1/me")
                token = await tokens_client.get("/v1/me", headers=access)
                statuses = {cookie.status_code, token.status_code}
                assert statuses <= {200, 503}
                await asyncio.sleep(0.2)
        finally:
            postgres.resume()

        # Back: the session and the token are whole.
        deadline = time.monotonic() + 15
        while (await cookie_client.get("/v1/me")).status_code != 200:
            assert time.monotonic() < deadline, "no recovery"
            await asyncio.sleep(0.2)
        assert (await tokens_client.get("/v1/me", headers=access)).status_code == 200
