"""Every call out has a deadline (S29): a hung Redis or a drained pool costs its timeout."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import asyncpg
import pytest

from keystile.app import create_app
from tests.support.backing import Backing, make_settings
from tests.support.http import login, register, services_of, unique_email
from tests.support.tokens import bearer, new_user_tokens


@pytest.fixture(name="silent_redis_url")
def _silent_redis_url() -> Iterator[str]:
    """A TCP server that accepts connections and never answers a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()


async def test_a_redis_that_never_answers_costs_only_its_deadline(
    backing: Backing, silent_redis_url: str
) -> None:
    # S29 (Redis socket timeout) and S30: the hung Redis is reported, logins still work.
    settings = make_settings(
        backing, redis_url=silent_redis_url, redis_socket_timeout=0.3, redis_connect_timeout=0.3
    )
    app = create_app(settings)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        started = time.monotonic()
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert (await ready.get_json())["failed"] == ["redis"]
        assert time.monotonic() - started < 1.5  # the readiness deadline, not a hang

        email = unique_email()
        started = time.monotonic()
        await register(client, email)
        assert (await login(client, email)).status_code == 201
        # Each Redis step gives up after its 0.3 s socket timeout (and the rate limiter
        # then stops asking for a while): seconds at most, never a hang.
        assert time.monotonic() - started < 8


async def test_a_drained_connection_pool_answers_503_after_the_acquire_timeout(
    backing: Backing,
) -> None:
    # S29 (pool acquire deadline): every connection busy -> 503 unavailable, promptly.
    settings = make_settings(backing, db_pool_size=1, db_acquire_timeout=0.5)
    app = create_app(settings)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        async with services_of(test_app).database.connection():  # hold the only connection
            started = time.monotonic()
            response = await login(client, unique_email())
            elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert (await response.get_json())["error"]["code"] == "unavailable"
        assert 0.4 < elapsed < 3.0
        assert (await login(client, unique_email())).status_code == 401  # pool is back


async def test_a_statement_stuck_behind_a_row_lock_answers_503_at_its_deadline(
    backing: Backing,
) -> None:
    # S29 (statement deadline): log out everywhere waits on a lock held on the user's row.
    # The lock outlasts the statement timeout many times over and is then let go, so a
    # statement without a deadline would wait for it and answer 204 instead of 503.
    settings = make_settings(backing, db_statement_timeout=0.5)
    async with create_app(settings).test_app() as test_app:
        client = test_app.test_client()
        email, body = await new_user_tokens(client)
        access = bearer(body["access_token"])
        holder = await asyncpg.connect(backing.database_url)
        try:
            lock = holder.transaction()
            await lock.start()
            await holder.execute("SELECT 1 FROM users WHERE email = $1 FOR UPDATE", email)

            async def let_go_later() -> None:
                await asyncio.sleep(10)
                await lock.rollback()

            letting_go = asyncio.create_task(let_go_later())
            response = await client.post("/v1/me/logout-everywhere", headers=access)
            letting_go.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await letting_go
            if holder.is_in_transaction():
                await lock.rollback()
        finally:
            await holder.close()
        assert response.status_code == 503, await response.get_data(as_text=True)
        assert (await response.get_json())["error"]["code"] == "unavailable"
        # The lock gone, the same request goes through.
        assert (await client.post("/v1/me/logout-everywhere", headers=access)).status_code == 204
