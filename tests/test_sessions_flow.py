"""Register, log in with a cookie, see who I am, log out: enforced on the server."""

from __future__ import annotations

import base64
from http.cookies import SimpleCookie

from prometheus_client import REGISTRY
from quart import Quart

from tests.support.http import PASSWORD, Client, login, register, unique_email


async def test_register_login_me_logout_flow(client: Client) -> None:
    email = unique_email()
    await register(client, email)

    response = await login(client, email)
    assert response.status_code == 201
    body = await response.get_json()
    assert body["user"]["email"] == email

    me = await client.get("/v1/me")
    assert me.status_code == 200
    assert (await me.get_json())["email"] == email

    assert (await client.delete("/v1/sessions/current")).status_code == 204
    assert (await client.get("/v1/me")).status_code == 401


async def test_replayed_cookie_after_logout_is_rejected(client: Client) -> None:
    # S9: logout is enforced on the server, not only by the browser dropping the cookie.
    email = unique_email()
    await register(client, email)
    response = await login(client, email)
    cookie_header = response.headers["Set-Cookie"].split(";", 1)[0]

    assert (await client.delete("/v1/sessions/current")).status_code == 204

    replay = await client.get("/v1/me", headers={"Cookie": cookie_header})
    assert replay.status_code == 401
    assert (await replay.get_json())["error"]["code"] == "not_authenticated"


async def test_session_cookie_carries_a_fresh_random_id_not_the_user_id(
    client: Client,
) -> None:
    # S7: random per-session id, never the user id; a new id at every login.
    email = unique_email()
    await register(client, email)
    first = await login(client, email)
    second = await login(client, email)
    user_id = (await first.get_json())["user"]["id"]

    def cookie_value(response: object) -> str:
        jar: SimpleCookie = SimpleCookie()
        jar.load(response.headers["Set-Cookie"])  # type: ignore[attr-defined]
        return next(iter(jar.values())).value

    values = {cookie_value(first), cookie_value(second)}
    assert len(values) == 2
    for value in values:
        assert user_id not in value
        assert user_id.replace("-", "") not in value


async def test_the_session_id_in_the_cookie_has_at_least_128_random_bits(app: Quart) -> None:
    # S7: what the signed cookie names is a fresh random id of >= 128 bits per login.
    quart_app = getattr(app, "app", app)  # the `app` fixture is the started test app
    extension = next(
        ext for ext in quart_app.extensions["QUART_AUTH"] if ext.cookie_name == "keystile_session"
    )
    client = app.test_client()
    email = unique_email()
    await register(client, email)
    session_ids = set()
    for _ in range(2):
        response = await login(client, email)
        jar: SimpleCookie = SimpleCookie()
        jar.load(response.headers["Set-Cookie"])
        session_id = extension.load_token(jar["keystile_session"].value, quart_app)
        assert session_id is not None
        assert len(base64.urlsafe_b64decode(session_id + "=" * (-len(session_id) % 4))) >= 16
        session_ids.add(session_id)
    assert len(session_ids) == 2


async def test_me_without_a_cookie_is_401_with_a_stable_code(client: Client) -> None:
    response = await client.get("/v1/me")
    assert response.status_code == 401
    assert (await response.get_json())["error"]["code"] == "not_authenticated"


async def test_duplicate_registration_answers_like_a_new_one(client: Client) -> None:
    # S6: registering a taken email must not reveal that it is taken.
    email = unique_email()
    first = await client.post("/v1/users", json={"email": email, "password": PASSWORD})
    again = await client.post(
        "/v1/users", json={"email": email.upper(), "password": "another password here"}
    )
    assert first.status_code == again.status_code == 202
    assert await first.get_data() == await again.get_data()
    # The original password still works; the second registration changed nothing.
    assert (await login(client, email)).status_code == 201
    assert (await login(client, email, "another password here")).status_code == 401


def _hashes_made() -> float:
    return (
        REGISTRY.get_sample_value("keystile_hash_duration_seconds_count", {"operation": "hash"})
        or 0.0
    )


async def test_registering_a_taken_email_costs_the_same_hash_as_a_new_one(
    client: Client,
) -> None:
    # S6: a taken email must not answer sooner for skipping the hash (counted, not timed).
    email = unique_email()
    before = _hashes_made()
    await register(client, email)
    assert _hashes_made() == before + 1
    await register(client, email.upper(), "another password here")
    assert _hashes_made() == before + 2


async def test_wrong_password_and_unknown_user_get_identical_answers(
    client: Client,
) -> None:
    # S6: same status and body for an unknown email and a wrong password.
    email = unique_email()
    await register(client, email)
    wrong = await login(client, email, "not the password at all")
    unknown = await login(client, unique_email())
    assert wrong.status_code == unknown.status_code == 401
    assert await wrong.get_data() == await unknown.get_data()
    assert (await wrong.get_json())["error"]["code"] == "invalid_credentials"
    assert "Set-Cookie" not in wrong.headers


async def test_auth_responses_are_no_store(client: Client) -> None:
    # S20: auth endpoints and every response setting a cookie are never cached.
    email = unique_email()
    await register(client, email)
    response = await login(client, email)
    assert response.headers["Cache-Control"] == "no-store"
    me = await client.get("/v1/me")
    assert me.headers["Cache-Control"] == "no-store"
    assert {"Cookie", "Authorization"} <= set(me.vary)  # S21


async def test_login_email_is_case_insensitive(client: Client) -> None:
    email = unique_email()
    await register(client, email)
    assert (await login(client, email.upper())).status_code == 201
