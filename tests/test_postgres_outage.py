"""PostgreSQL down (S31): bearer requests go on from caches, logins fail fast, the pool heals."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from keystile.app import create_app
from keystile.embedded import EmbeddedPostgres, EmbeddedRedis
from keystile.settings import Settings
from tests.support.backing import Backing, make_settings
from tests.support.http import PASSWORD, login, register, services_of, unique_email
from tests.support.tokens import bearer, grant, refresh


async def test_bearer_requests_survive_a_postgres_outage_and_logins_and_refreshes_fail_fast(
    backing: Backing, private_postgres: tuple[EmbeddedPostgres, str]
) -> None:
    postgres, url = private_postgres
    settings: Settings = make_settings(
        backing,
        database_url=url,
        db_acquire_timeout=1.0,
        db_connect_timeout=1.0,
        # Reloads fail while PostgreSQL is away: the keys loaded before must stay (S31).
        signing_key_refresh_seconds=0.2,
    )
    app = create_app(settings)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        email = unique_email()
        await register(client, email)
        granted = await grant(client, email)
        assert granted.status_code == 200
        access = (await granted.get_json())["access_token"]
        refresh_token = (await granted.get_json())["refresh_token"]
        assert (await client.get("/v1/me", headers=bearer(access))).status_code == 200

        postgres.pause()
        try:
            # S31: verified locally; the epoch comes from the in-process cache over Redis,
            # so this keeps working past the local TTL while PostgreSQL is away.
            deadline = time.monotonic() + settings.tokens.epoch_cache_seconds + 1
            while time.monotonic() < deadline:
                me = await client.get("/v1/me", headers=bearer(access))
                assert me.status_code == 200, await me.get_data(as_text=True)

            started = time.monotonic()
            refused = await grant(client, email)
            assert refused.status_code == 503
            assert (await refused.get_json())["error"]["code"] == "unavailable"
            assert "Retry-After" in refused.headers
            assert time.monotonic() - started < 3.0  # fails fast, within its deadlines

            registered = await client.post(
                "/v1/users", json={"email": unique_email(), "password": PASSWORD}
            )
            assert registered.status_code == 503

            started = time.monotonic()
            not_rotated = await refresh(client, refresh_token)
            assert not_rotated.status_code == 503
            assert (await not_rotated.get_json())["error"]["code"] == "unavailable"
            assert "Retry-After" in not_rotated.headers
            assert time.monotonic() - started < 3.0
        finally:
            postgres.resume()

        # The pool recovers by itself: no restart, the next logins succeed.
        deadline = time.monotonic() + 15
        while (status := (await grant(client, email)).status_code) != 200:
            assert status == 503
            assert time.monotonic() < deadline, "the pool did not recover"
            await asyncio.sleep(0.2)
        # The refresh refused during the outage spent nothing: its token still rotates.
        assert (await refresh(client, refresh_token)).status_code == 200


async def test_with_postgres_and_redis_both_down_requests_live_on_local_copies_only(
    backing: Backing, private_postgres: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    # S31 + S30: with both down, a worker answers from its in-process copies while they
    # live, then 503; nothing else works but the JWKS, and nothing answers 500.
    postgres, url = private_postgres
    redis = EmbeddedRedis(tmp_path / "redis-data", persist=False)
    settings = make_settings(
        backing,
        database_url=url,
        redis_url=redis.start(),
        db_acquire_timeout=1.0,
        db_connect_timeout=1.0,
        session_cache_local_ttl_seconds=60,
        token_epoch_cache_seconds=60,
    )
    try:
        async with create_app(settings).test_app() as app:
            cookie_client = app.test_client()
            email = unique_email()
            await register(cookie_client, email)
            assert (await login(cookie_client, email)).status_code == 201
            granted = await grant(app.test_client(), email)
            access = bearer((await granted.get_json())["access_token"])
            tokens_client = app.test_client()
            assert (await cookie_client.get("/v1/me")).status_code == 200
            assert (await tokens_client.get("/v1/me", headers=access)).status_code == 200

            redis.stop()
            postgres.pause()
            try:
                # The in-process copies (token epoch, session state) still answer.
                assert (await cookie_client.get("/v1/me")).status_code == 200
                assert (await tokens_client.get("/v1/me", headers=access)).status_code == 200
                assert (await app.test_client().get("/.well-known/jwks.json")).status_code == 200
                for refused in (
                    await login(app.test_client(), email),
                    await grant(app.test_client(), email),
                    await cookie_client.delete("/v1/sessions/current"),
                    await app.test_client().get("/readyz"),
                ):
                    assert refused.status_code == 503, await refused.get_data(as_text=True)
                # Once they expire (forgotten here at once), the state cannot be read: 503.
                services_of(app).caches.forget_all()
                assert (await cookie_client.get("/v1/me")).status_code == 503
                assert (await tokens_client.get("/v1/me", headers=access)).status_code == 503
            finally:
                postgres.resume()
    finally:
        redis.stop()
