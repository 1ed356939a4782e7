"""A PostgreSQL outage longer than the caches' lifetimes (S31): reads go on for the grace.

Authenticated requests (cookie and bearer) keep working from the copies kept in Redis
for `db_outage_grace_seconds`, long after the shared copies' own TTL, and answer 503
once the grace is spent. A revocation that reached Redis before or during the outage
deletes or ends those copies too, so it is never undone. The first test shrinks the
TTLs to reach the grace's end; the second is the issue's 60 s outage under load, on a
real `keystile serve` with the default TTLs.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from keystile.app import create_app
from keystile.embedded import EmbeddedPostgres
from keystile.repositories.sessions import PostgresSessionRepository
from tests.support.backing import ROOMY_RATE, Backing, make_settings
from tests.support.http import PASSWORD, login, register, services_of, unique_email
from tests.support.processes import SECRET_KEY, start_server, wait_until_ready
from tests.support.tokens import bearer, new_user_tokens

pytestmark = pytest.mark.slow

_REDIS_TTL = 1.0
_GRACE = 4.0


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


_OUTAGE = 60.0  # the outage; the default grace (300 s) outlives it
_CLIENT_TIMEOUT = 20.0  # a request not answered by then counts as hung
_CLIENTS = 3  # of each kind: cookie and bearer


async def _cookie_client(stack: AsyncExitStack, base: str) -> tuple[httpx.AsyncClient, str]:
    client = await stack.enter_async_context(
        httpx.AsyncClient(base_url=base, timeout=_CLIENT_TIMEOUT)
    )
    email = unique_email()
    credentials = {"email": email, "password": PASSWORD}
    assert (await client.post("/v1/users", json=credentials)).status_code == 202
    assert (await client.post("/v1/sessions", json=credentials)).status_code == 201
    return client, email


async def _bearer_client(stack: AsyncExitStack, base: str) -> httpx.AsyncClient:
    client = await stack.enter_async_context(
        httpx.AsyncClient(base_url=base, timeout=_CLIENT_TIMEOUT)
    )
    credentials = {"email": unique_email(), "password": PASSWORD}
    assert (await client.post("/v1/users", json=credentials)).status_code == 202
    granted = await client.post("/v1/tokens", json=credentials)
    assert granted.status_code == 200, granted.text
    client.headers.update(bearer(granted.json()["access_token"]))
    return client


async def _status(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> int:
    """The answer's status, or 0 if none came within the client's timeout (a hang)."""
    try:
        return (await client.request(method, path, **kw)).status_code
    except httpx.TimeoutException:
        return 0


async def test_a_minute_without_postgres_under_load_keeps_sessions_and_tokens_working(
    backing: Backing, private_postgres: tuple[EmbeddedPostgres, str], tmp_path: Path
) -> None:
    # S31 with the default TTLs (60 s shared copies, 300 s grace): every cookie, bearer
    # and API-key request answers 200 for the whole minute, a session ended and published
    # to Redis during the outage is refused with 401, logins answer 503 (none hangs),
    # and logins work again once PostgreSQL is back.
    postgres, url = private_postgres
    server = start_server(
        backing,
        tmp_path / "serve",
        database_url=url,
        rate_limit_login_per_account=ROOMY_RATE,
        rate_limit_token_per_account=ROOMY_RATE,
    )
    try:
        await asyncio.to_thread(wait_until_ready, server)
        async with AsyncExitStack() as stack:
            cookies = [await _cookie_client(stack, server.base) for _ in range(_CLIENTS)]
            bearers = [await _bearer_client(stack, server.base) for _ in range(_CLIENTS)]
            ended_client, ended_email = await _cookie_client(stack, server.base)
            created = await bearers[0].post(
                "/v1/me/api-keys",
                json={"name": "load", "scopes": ["account"], "expires_in_days": 30},
            )
            assert created.status_code == 201, created.text
            api_key = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=server.base,
                    timeout=_CLIENT_TIMEOUT,
                    headers=bearer(created.json()["key"]),
                )
            )
            readers = [client for client, _ in cookies] + bearers + [api_key]
            # The ended session's cookie, sent as is even after a 401 clears it.
            replay = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=server.base,
                    timeout=_CLIENT_TIMEOUT,
                    headers={
                        "Cookie": "; ".join(f"{k}={v}" for k, v in ended_client.cookies.items())
                    },
                )
            )
            for client in [*readers, replay]:
                assert await _status(client, "GET", "/v1/me") == 200

            # Another worker of the deployment ends a session: committed in PostgreSQL just
            # before it goes away, published to Redis during the outage (as a worker does
            # when it replays an invalidation Redis missed).
            worker = await stack.enter_async_context(
                create_app(
                    make_settings(backing, database_url=url, secret_key=SECRET_KEY)
                ).test_app()
            )
            services = services_of(worker)
            user = await services.users.select_user_by_email(ended_email)
            assert user is not None
            sessions = PostgresSessionRepository(services.database)
            ended = await sessions.revoke_user_sessions(user.id)
            assert len(ended) == 1

            statuses: dict[str, list[int]] = {"reads": [], "logins": [], "readyz": []}
            after_end: list[int] = []
            stop = asyncio.Event()

            async def read(client: httpx.AsyncClient) -> None:
                while not stop.is_set():
                    statuses["reads"].append(await _status(client, "GET", "/v1/me"))
                    await asyncio.sleep(0.05)

            async def log_in() -> None:
                email = cookies[0][1]
                while not stop.is_set():
                    async with httpx.AsyncClient(
                        base_url=server.base, timeout=_CLIENT_TIMEOUT
                    ) as fresh:
                        for path in ("/v1/sessions", "/v1/tokens"):
                            body = {"email": email, "password": PASSWORD}
                            statuses["logins"].append(await _status(fresh, "POST", path, json=body))
                        statuses["readyz"].append(await _status(fresh, "GET", "/readyz"))
                    await asyncio.sleep(1.0)

            async def end_during_the_outage() -> None:
                await asyncio.sleep(_OUTAGE / 3)
                cache = services.sessions.cache
                await asyncio.gather(*(cache.invalidate(h.hex(), outage_copy="end") for h in ended))
                while not stop.is_set():
                    after_end.append(await _status(replay, "GET", "/v1/me"))
                    await asyncio.sleep(0.1)

            postgres.pause()
            try:
                tasks = [asyncio.create_task(read(client)) for client in readers]
                tasks += [
                    asyncio.create_task(log_in()),
                    asyncio.create_task(end_during_the_outage()),
                ]
                await asyncio.sleep(_OUTAGE)
                stop.set()
                await asyncio.gather(*tasks)
            finally:
                postgres.resume()

            reads = statuses["reads"]
            assert reads
            assert set(reads) == {200}, f"{len(reads) - reads.count(200)} of {len(reads)} failed"
            assert statuses["logins"]
            assert set(statuses["logins"]) == {503}, statuses["logins"]  # 0 would be a hang
            assert set(statuses["readyz"]) == {503}  # PostgreSQL was down throughout
            # The ended session: refused once its worker heard of it (pub/sub, or the local
            # copy's 5 s TTL), and from then on always 401, never 200 nor 503.
            assert 401 in after_end, after_end
            first = after_end.index(401)
            assert set(after_end[:first]) <= {200}, after_end
            assert set(after_end[first:]) == {401}, after_end

            # PostgreSQL back: the pool heals by itself and logins work again.
            deadline = time.monotonic() + 30
            body = {"email": cookies[0][1], "password": PASSWORD}
            fresh = await stack.enter_async_context(
                httpx.AsyncClient(base_url=server.base, timeout=_CLIENT_TIMEOUT)
            )
            while (status := await _status(fresh, "POST", "/v1/tokens", json=body)) != 200:
                assert status == 503, status
                assert time.monotonic() < deadline, "logins did not come back"
                await asyncio.sleep(0.5)
            for client in readers:
                assert await _status(client, "GET", "/v1/me") == 200
            assert await _status(replay, "GET", "/v1/me") == 401
    finally:
        server.stop()


async def test_a_session_touched_just_before_the_outage_is_still_served(
    backing: Backing, private_postgres: tuple[EmbeddedPostgres, str]
) -> None:
    # S31: a touch (last_seen_at) invalidates the shared copy but keeps the outage copy,
    # so a session touched and not read again before PostgreSQL went down goes on.
    postgres, url = private_postgres
    settings = make_settings(
        backing,
        database_url=url,
        db_acquire_timeout=0.5,
        db_connect_timeout=0.5,
        session_touch_interval_seconds=1,
    )
    async with create_app(settings).test_app() as app:
        client = app.test_client()
        email = unique_email()
        await register(client, email)
        assert (await login(client, email)).status_code == 201
        caches = services_of(app).caches
        assert (await client.get("/v1/me")).status_code == 200
        await asyncio.sleep(1.5)  # past the touch interval: the next read touches the session
        assert (await client.get("/v1/me")).status_code == 200
        postgres.pause()
        try:
            caches.forget_all()
            assert (await client.get("/v1/me")).status_code == 200
        finally:
            postgres.resume()
