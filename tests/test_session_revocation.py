"""Every way a session ends is refused on another app instance within a second (S9, S10, S3).

Two app instances share PostgreSQL and Redis, like two workers or two hosts. Their
session caches keep entries for a minute, so a refusal inside one second can only
come from the pub/sub invalidation, not from the cache expiring.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from http.cookies import SimpleCookie

import pytest
from quart import Quart

from keystile.app import create_app
from keystile.container import Services
from keystile.services.sessions import hash_session_id
from keystile.web.context import EXTENSION_KEY
from tests.support.backing import Backing, make_settings
from tests.support.http import PASSWORD, Client, eventually_status, login, register, unique_email


def _services(app: Quart) -> Services:
    return app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


@pytest.fixture(name="two_apps")
async def _two_apps(backing: Backing) -> AsyncIterator[tuple[Quart, Quart]]:
    settings = make_settings(backing, session_cache_local_ttl_seconds=60)
    first, second = create_app(settings), create_app(settings)
    async with first.test_app(), second.test_app():
        for app in (first, second):
            await asyncio.wait_for(_services(app).caches.ready.wait(), timeout=5)
        yield first, second


def _cookie(response: object) -> tuple[str, str]:
    jar: SimpleCookie = SimpleCookie()
    jar.load(response.headers["Set-Cookie"])  # type: ignore[attr-defined]
    morsel = next(iter(jar.values()))
    return morsel.key, morsel.value


async def _by_logout(app: Quart, victim: Client, other: Client, email: str) -> None:
    assert (await victim.delete("/v1/sessions/current")).status_code == 204


async def _by_revoke(app: Quart, victim: Client, other: Client, email: str) -> None:
    listed = await (await other.get("/v1/sessions")).get_json()
    (target,) = [s["id"] for s in listed["sessions"] if not s["current"]]
    assert (await other.delete(f"/v1/sessions/{target}")).status_code == 204


async def _by_logout_everywhere(app: Quart, victim: Client, other: Client, email: str) -> None:
    assert (await other.post("/v1/me/logout-everywhere")).status_code == 204


async def _by_password_change(app: Quart, victim: Client, other: Client, email: str) -> None:
    body = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
    assert (await other.post("/v1/me/password", json=body)).status_code == 204


async def _by_disable(app: Quart, victim: Client, other: Client, email: str) -> None:
    await _services(app).admin.disable_user(email)


REVOCATIONS: dict[str, Callable[[Quart, Client, Client, str], Awaitable[None]]] = {
    "logout": _by_logout,
    "revoke-by-id": _by_revoke,
    "logout-everywhere": _by_logout_everywhere,
    "password-change": _by_password_change,  # S3
    "disable-user": _by_disable,  # S10
}


@pytest.mark.parametrize("how", list(REVOCATIONS))
async def test_ended_session_is_refused_on_another_instance_within_a_second(
    two_apps: tuple[Quart, Quart], how: str
) -> None:
    # S9: revocation is enforced on the server, on every worker.
    first, second = two_apps
    email = unique_email()
    victim, other = first.test_client(), first.test_client()
    await register(victim, email)
    victim_login = await login(victim, email)
    assert victim_login.status_code == 201
    assert (await login(other, email)).status_code == 201
    name, value = _cookie(victim_login)
    replay = {"headers": {"Cookie": f"{name}={value}"}}

    elsewhere = second.test_client()
    assert (await elsewhere.get("/v1/me", **replay)).status_code == 200
    cached = hash_session_id(_session_id(second, value)).hex()
    assert _services(second).sessions.cache.local.get(cached) is not None

    await REVOCATIONS[how](first, victim, other, email)

    await eventually_status(elsewhere, "/v1/me", 401, within=1.0, **replay)


def _session_id(app: Quart, cookie_value: str) -> str:
    """Read the session id out of the signed quart-auth cookie (as the app does)."""
    extension = next(
        ext for ext in app.extensions["QUART_AUTH"] if ext.cookie_name == "keystile_session"
    )
    session_id = extension.load_token(cookie_value, app)
    assert session_id is not None
    return session_id
