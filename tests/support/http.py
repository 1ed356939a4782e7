"""Talking to a test app: unique accounts and addresses, register, log in, wait."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from quart import Quart, Response
from quart.testing import QuartClient
from quart.typing import TestClientProtocol as Client

from keystile.container import Services
from keystile.web.context import EXTENSION_KEY

__all__ = [
    "PASSWORD",
    "Client",
    "HttpsClient",
    "eventually_status",
    "from_ip",
    "login",
    "logins_at_once",
    "register",
    "services_of",
    "unique_email",
    "unique_ip",
]


class HttpsClient(QuartClient):
    """A test client whose requests arrive over https, as from a TLS proxy in front.

    For apps with Secure cookies (an https `public_url` needs them, S8): quart-auth
    warns when it sets one on a plain-http request.
    """

    async def open(self, path: str, *, scheme: str = "https", **request: Any) -> Response:
        return await super().open(path, scheme=scheme, **request)


def unique_email() -> str:
    """Return an email no other test uses."""
    return f"user-{uuid.uuid4().hex}@example.com"


def unique_ip() -> str:
    """Return a client address no other test uses (IPv6 documentation range)."""
    groups = uuid.uuid4().hex[:24]
    return "2001:db8:" + ":".join(groups[i : i + 4] for i in range(0, 24, 4))


def from_ip(ip: str) -> dict[str, Any]:
    """Keyword arguments for a test-client request that arrives from socket address `ip`."""
    return {"scope_base": {"client": (ip, 40000)}}


PASSWORD = "correct horse battery staple"


async def register(client: Client, email: str, password: str = PASSWORD) -> None:
    response = await client.post("/v1/users", json={"email": email, "password": password})
    assert response.status_code == 202, await response.get_data(as_text=True)


async def login(client: Client, email: str, password: str = PASSWORD) -> Any:
    return await client.post("/v1/sessions", json={"email": email, "password": password})


async def eventually_status(
    client: Client, path: str, status: int, *, within: float, **request: Any
) -> float:
    """GET `path` until it answers `status`; fail if that takes longer than `within` seconds.

    For changes that reach other workers asynchronously (cache invalidation by pub/sub).
    Returns how long it took.
    """
    started = time.monotonic()
    while True:
        response = await client.get(path, **request)
        elapsed = time.monotonic() - started
        if response.status_code == status:
            return elapsed
        assert elapsed < within, f"{path} still answers {response.status_code} after {within} s"
        await asyncio.sleep(0.01)


def services_of(app: Quart) -> Services:
    """Return the services of a started app (the `app` fixture, or `app.test_app()`)."""
    return getattr(app, "app", app).extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


async def logins_at_once(app: Quart, count: int) -> list[int]:
    """Store `count` new accounts, then send a password grant for each, all at once.

    Return the answers' statuses, in the accounts' order.
    """
    services = services_of(app)
    password_hash = await services.hasher.hash(PASSWORD)
    emails = [unique_email() for _ in range(count)]
    await services.users.insert_users([(email, password_hash) for email in emails])
    client = app.test_client()
    answers = await asyncio.gather(
        *(client.post("/v1/tokens", json={"email": e, "password": PASSWORD}) for e in emails)
    )
    return [answer.status_code for answer in answers]
