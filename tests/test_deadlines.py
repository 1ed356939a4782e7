"""Every call out has a deadline (S29): a hung Redis or a drained pool costs its timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from keystile.app import create_app
from tests.support.backing import Backing, make_settings
from tests.support.http import login, register, services_of, unique_email


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
