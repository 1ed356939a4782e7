"""Revocation reaches every worker at once: two apps sharing PostgreSQL and Redis (S3, S17)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart

from keystile.app import create_app
from keystile.embedded import EmbeddedRedis
from tests.support.backing import Backing, make_settings
from tests.support.http import PASSWORD, Client, login, services_of
from tests.support.tokens import bearer, error_code, new_user_tokens

# Pub/sub delivery takes milliseconds; the bound is generous for a loaded machine and far
# below the local cache TTL, so passing it proves the message (not the TTL) did the work.
_PROPAGATION = 2.0


@pytest.fixture(name="two_apps")
async def _two_apps(backing: Backing) -> AsyncIterator[tuple[Quart, Quart]]:
    # One deployment (same settings and secret), two workers; the local epoch cache lives
    # far longer than the test, so only an invalidation message can refresh it.
    settings = make_settings(backing, token_epoch_cache_seconds=60)
    first, second = create_app(settings), create_app(settings)
    async with first.test_app() as one, second.test_app() as two:
        for app in (one, two):
            await asyncio.wait_for(services_of(app).caches.ready.wait(), timeout=5)
        yield one, two


async def _refused_within(client: Client, token: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get("/v1/me", headers=bearer(token))
        if response.status_code == 401:
            return str((await response.get_json())["error"]["code"])
        assert response.status_code == 200
        assert time.monotonic() < deadline, "the other worker still accepts the token"
        await asyncio.sleep(0.01)


async def test_logout_everywhere_on_one_worker_ends_tokens_on_another(
    two_apps: tuple[Quart, Quart],
) -> None:
    # S17
    one, two = two_apps
    client_one, client_two = one.test_client(), two.test_client()
    _, body = await new_user_tokens(client_one)
    token = body["access_token"]
    # Both workers have verified the token and cached the user's epoch.
    assert (await client_one.get("/v1/me", headers=bearer(token))).status_code == 200
    assert (await client_two.get("/v1/me", headers=bearer(token))).status_code == 200

    assert (
        await client_one.post("/v1/me/logout-everywhere", headers=bearer(token))
    ).status_code == 204

    assert (
        await error_code(await client_one.get("/v1/me", headers=bearer(token))) == "token_revoked"
    )
    assert await _refused_within(client_two, token, _PROPAGATION) == "token_revoked"
    refused = await client_two.post(
        "/v1/tokens/refresh", json={"refresh_token": body["refresh_token"]}
    )
    assert await error_code(refused) == "invalid_refresh_token"


async def test_password_change_on_one_worker_ends_tokens_on_another(
    two_apps: tuple[Quart, Quart],
) -> None:
    # S3, S17: a cookie-authenticated password change ends the user's bearer tokens too.
    one, two = two_apps
    client_one, client_two = one.test_client(), two.test_client()
    email, body = await new_user_tokens(client_one)
    token = body["access_token"]
    assert (await client_two.get("/v1/me", headers=bearer(token))).status_code == 200
    assert (await login(client_one, email)).status_code == 201

    response = await client_one.post(
        "/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "another long passphrase"},
    )
    assert response.status_code == 204

    assert await _refused_within(client_two, token, _PROPAGATION) == "token_revoked"
    assert (await client_one.get("/v1/me")).status_code == 200  # the calling session stays
    refused = await client_two.post(
        "/v1/tokens/refresh", json={"refresh_token": body["refresh_token"]}
    )
    assert refused.status_code == 401


async def test_a_new_login_after_logout_everywhere_works_on_every_worker(
    two_apps: tuple[Quart, Quart],
) -> None:
    one, two = two_apps
    client_one, client_two = one.test_client(), two.test_client()
    email, body = await new_user_tokens(client_one)
    assert (await client_two.get("/v1/me", headers=bearer(body["access_token"]))).status_code == 200
    assert (
        await client_one.post("/v1/me/logout-everywhere", headers=bearer(body["access_token"]))
    ).status_code == 204
    fresh = await client_one.post("/v1/tokens", json={"email": email, "password": PASSWORD})
    token = (await fresh.get_json())["access_token"]
    deadline = time.monotonic() + _PROPAGATION
    while (await client_two.get("/v1/me", headers=bearer(token))).status_code != 200:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_with_redis_down_bearer_checks_fall_back_to_postgresql(
    backing: Backing, tmp_path: Path
) -> None:
    # S30: with Redis gone, bearer requests still work from PostgreSQL, and a revocation
    # is still enforced (never "allow").
    redis = EmbeddedRedis(tmp_path, persist=False)
    settings = make_settings(backing, redis_url=redis.start(), token_epoch_cache_seconds=0.2)
    app = create_app(settings)
    try:
        async with app.test_app() as test_app:
            client = test_app.test_client()
            _, body = await new_user_tokens(client)
            token = body["access_token"]
            redis.stop()
            await asyncio.sleep(0.3)  # the local epoch copy has expired: the next read misses
            assert (await client.get("/v1/me", headers=bearer(token))).status_code == 200
            response = await client.post("/v1/me/logout-everywhere", headers=bearer(token))
            assert response.status_code == 204
            assert await error_code(await client.get("/v1/me", headers=bearer(token))) == (
                "token_revoked"
            )
    finally:
        redis.stop()
