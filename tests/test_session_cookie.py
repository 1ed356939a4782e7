"""Session cookies are verified once per worker and remembered only until they expire."""

from __future__ import annotations

import asyncio

import pytest
from quart import Quart
from quart_auth import AuthUser, current_user, login_user, logout_user
from quart_auth.extension import _AuthSerializer

from keystile.web.session_cookie import SessionCookieAuth, cookie_session_id

_COOKIE = "session"


def _app(duration: int) -> Quart:
    app = Quart(__name__)
    app.secret_key = "a test secret, not keystile's"

    @app.post("/login")
    async def log_in() -> str:
        login_user(AuthUser("the-session-id"))
        return ""

    @app.post("/logout")
    async def log_out() -> str:
        logout_user()
        return ""

    @app.get("/plain")
    async def plain() -> str:
        return "no one asked"

    @app.get("/whoami")
    async def whoami() -> str:
        return current_user.auth_id or "nobody"

    @app.get("/session-id")
    async def session_id() -> str:
        return cookie_session_id() or "nobody"

    @app.post("/login-then-read")
    async def log_in_then_read() -> str:
        login_user(AuthUser("a-new-session-id"))
        return cookie_session_id() or "nobody"

    @app.post("/logout-then-read")
    async def log_out_then_read() -> str:
        logout_user()
        return cookie_session_id() or "nobody"

    SessionCookieAuth(app, salt="test", cookie_name=_COOKIE, cookie_secure=False, duration=duration)
    return app


@pytest.fixture(name="checks")
def _checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every signature check quart-auth's serializer makes (it still makes them)."""
    made: list[str] = []
    loads = _AuthSerializer.loads

    def counting(self: _AuthSerializer, token: str, *args: object, **kwargs: object) -> object:
        made.append(token)
        return loads(self, token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_AuthSerializer, "loads", counting)
    return made


async def _cookie(app: Quart) -> str:
    response = await app.test_client().post("/login")
    return response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]


async def _whoami(app: Quart, cookie: str) -> str:
    response = await app.test_client().get("/whoami", headers={"Cookie": f"{_COOKIE}={cookie}"})
    return await response.get_data(as_text=True)


async def test_a_verified_cookie_is_not_checked_again(checks: list[str]) -> None:
    app = _app(duration=3600)
    cookie = await _cookie(app)
    assert [await _whoami(app, cookie) for _ in range(3)] == ["the-session-id"] * 3
    assert checks == [cookie]


async def test_a_forged_cookie_is_refused_every_time_and_never_remembered(
    checks: list[str],
) -> None:
    app = _app(duration=3600)
    cookie = await _cookie(app)
    forged = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
    assert [await _whoami(app, forged) for _ in range(2)] == ["nobody", "nobody"]
    assert checks == [forged, forged]
    assert await _whoami(app, cookie) == "the-session-id"


async def test_a_remembered_cookie_stops_working_when_it_expires() -> None:
    # S9: the cookie's own lifetime holds for a remembered cookie too (the session's
    # idle and absolute lifetimes are checked server-side on every request).
    app = _app(duration=1)
    cookie = await _cookie(app)
    assert await _whoami(app, cookie) == "the-session-id"
    await asyncio.sleep(2.2)  # itsdangerous counts whole seconds
    assert await _whoami(app, cookie) == "nobody"


async def test_the_cookie_is_written_at_login_deleted_at_logout_and_otherwise_left_alone() -> None:
    app = _app(duration=3600)
    client = app.test_client()
    assert (await client.post("/login")).headers["Set-Cookie"].startswith(f"{_COOKIE}=")
    assert "Set-Cookie" not in (await client.get("/plain")).headers
    assert "Set-Cookie" not in (await client.get("/whoami")).headers
    deleted = (await client.post("/logout")).headers["Set-Cookie"]
    assert deleted.startswith(f"{_COOKIE}=;")
    assert "Max-Age=0" in deleted


async def test_the_session_id_read_directly_is_the_one_quart_auth_would_give() -> None:
    # S9: cookie_session_id skips quart-auth's user object; it must answer as current_user
    # does: the cookie's id, nobody for a missing or forged cookie, and the login or
    # logout made earlier in the same request.
    app = _app(duration=3600)
    cookie = await _cookie(app)
    forged = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")

    async def read(method: str, path: str, cookie: str | None) -> str:
        headers = {} if cookie is None else {"Cookie": f"{_COOKIE}={cookie}"}
        response = await app.test_client().open(path, method=method, headers=headers)
        return await response.get_data(as_text=True)

    assert await read("GET", "/session-id", cookie) == "the-session-id"
    assert await read("GET", "/session-id", None) == "nobody"
    assert await read("GET", "/session-id", forged) == "nobody"
    assert await read("POST", "/login-then-read", cookie) == "a-new-session-id"
    assert await read("POST", "/logout-then-read", cookie) == "nobody"
    left_alone = await app.test_client().get(
        "/session-id", headers={"Cookie": f"{_COOKIE}={cookie}"}
    )
    assert "Set-Cookie" not in left_alone.headers
