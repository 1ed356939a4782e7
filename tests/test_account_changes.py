"""Password change (S3) and log out everywhere (S17, sessions part)."""

from __future__ import annotations

from quart import Quart

from tests.support.http import PASSWORD, Client, login, register, unique_email

NEW_PASSWORD = "an entirely new passphrase"


async def _two_sessions(app: Quart) -> tuple[Client, Client, str]:
    email = unique_email()
    first, second = app.test_client(), app.test_client()
    await register(first, email)
    assert (await login(first, email)).status_code == 201
    assert (await login(second, email)).status_code == 201
    return first, second, email


async def test_password_change_needs_the_current_password(app: Quart) -> None:
    first, second, email = await _two_sessions(app)
    response = await first.post(
        "/v1/me/password",
        json={"current_password": "not the password", "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 401
    assert (await response.get_json())["error"]["code"] == "invalid_credentials"
    assert (await second.get("/v1/me")).status_code == 200
    assert (await login(app.test_client(), email)).status_code == 201


async def test_password_change_ends_other_sessions_but_keeps_this_one(app: Quart) -> None:
    # S3: the change ends the user's other sessions.
    first, second, email = await _two_sessions(app)
    response = await first.post(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 204
    assert (await first.get("/v1/me")).status_code == 200
    assert (await second.get("/v1/me")).status_code == 401
    fresh = app.test_client()
    assert (await login(fresh, email)).status_code == 401
    assert (await login(fresh, email, NEW_PASSWORD)).status_code == 201


async def test_password_change_refuses_a_weak_new_password(app: Quart) -> None:
    first, _, _ = await _two_sessions(app)
    response = await first.post(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": "Baseball1"}
    )
    assert response.status_code == 422
    assert (await response.get_json())["error"]["code"] == "weak_password"


async def test_password_change_to_a_too_short_password_names_the_field(app: Quart) -> None:
    first, _, _ = await _two_sessions(app)
    response = await first.post(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": "short"}
    )
    assert response.status_code == 422
    error = (await response.get_json())["error"]
    assert error["fields"] == [
        {"field": "new_password", "message": "The password must be at least 8 characters."}
    ]


async def test_logout_everywhere_ends_every_session(app: Quart) -> None:
    first, second, _ = await _two_sessions(app)
    assert (await first.post("/v1/me/logout-everywhere")).status_code == 204
    assert (await first.get("/v1/me")).status_code == 401
    assert (await second.get("/v1/me")).status_code == 401
