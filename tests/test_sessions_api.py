"""GET /v1/sessions and DELETE /v1/sessions/{id}: my sessions, and ending one of them."""

from __future__ import annotations

import uuid

from quart import Quart

from tests.support.http import Client, login, register, unique_email

FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


async def _devices(app: Quart) -> tuple[Client, Client, str]:
    email = unique_email()
    laptop, phone = app.test_client(), app.test_client()
    await register(laptop, email)
    for client, agent in ((laptop, FIREFOX), (phone, IPHONE)):
        response = await client.post(
            "/v1/sessions",
            json={"email": email, "password": "correct horse battery staple"},
            headers={"User-Agent": agent},
        )
        assert response.status_code == 201
    return laptop, phone, email


async def _sessions(client: Client) -> list[dict[str, object]]:
    response = await client.get("/v1/sessions")
    assert response.status_code == 200
    return (await response.get_json())["sessions"]  # type: ignore[no-any-return]


async def test_session_list_shows_my_devices_and_marks_this_one(app: Quart) -> None:
    laptop, _, _ = await _devices(app)
    sessions = await _sessions(laptop)
    assert [s["device"] for s in sessions] == ["Mobile Safari 17 on iOS", "Firefox 133 on Windows"]
    assert [s["current"] for s in sessions] == [False, True]
    for session in sessions:
        assert set(session) == {
            "id",
            "created_at",
            "last_seen_at",
            "expires_at",
            "device",
            "ip",
            "current",
        }
        uuid.UUID(str(session["id"]))


async def test_session_list_never_shows_secrets_or_other_users_sessions(app: Quart) -> None:
    laptop, _, _ = await _devices(app)
    stranger = app.test_client()
    email = unique_email()
    await register(stranger, email)
    login_response = await login(stranger, email)
    cookie_value = login_response.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]

    theirs = await _sessions(stranger)
    assert len(theirs) == 1
    assert all(s["id"] not in {m["id"] for m in theirs} for s in await _sessions(laptop))
    body = await (await stranger.get("/v1/sessions")).get_data(as_text=True)
    assert cookie_value not in body  # S18: the session id never leaves in a response body


async def test_revoking_my_other_session_ends_it_and_its_cookie_replay_is_refused(
    app: Quart,
) -> None:
    # S9: revocation is enforced on the server.
    laptop, phone, _ = await _devices(app)
    (other,) = [s for s in await _sessions(laptop) if not s["current"]]
    response = await laptop.delete(f"/v1/sessions/{other['id']}")
    assert response.status_code == 204
    assert "Set-Cookie" not in response.headers
    assert (await phone.get("/v1/me")).status_code == 401
    assert (await laptop.get("/v1/me")).status_code == 200
    assert [s["current"] for s in await _sessions(laptop)] == [True]


async def test_revoking_the_current_session_by_id_logs_out_here(app: Quart) -> None:
    laptop, phone, _ = await _devices(app)
    (mine,) = [s for s in await _sessions(laptop) if s["current"]]
    response = await laptop.delete(f"/v1/sessions/{mine['id']}")
    assert response.status_code == 204
    assert "Set-Cookie" in response.headers  # the cookie is dropped too
    assert (await laptop.get("/v1/me")).status_code == 401
    assert (await phone.get("/v1/me")).status_code == 200


async def test_someone_elses_session_id_is_not_found_and_stays_alive(app: Quart) -> None:
    laptop, phone, _ = await _devices(app)
    intruder = app.test_client()
    email = unique_email()
    await register(intruder, email)
    assert (await login(intruder, email)).status_code == 201

    (target,) = [s for s in await _sessions(laptop) if not s["current"]]
    response = await intruder.delete(f"/v1/sessions/{target['id']}")
    unknown = await intruder.delete(f"/v1/sessions/{uuid.uuid4()}")
    assert response.status_code == unknown.status_code == 404
    assert await response.get_data() == await unknown.get_data()
    assert (await phone.get("/v1/me")).status_code == 200


async def test_revoking_needs_a_session_and_a_same_site_request(app: Quart) -> None:
    laptop, phone, _ = await _devices(app)
    (target,) = [s for s in await _sessions(laptop) if not s["current"]]
    anonymous = await app.test_client().delete(f"/v1/sessions/{target['id']}")
    assert anonymous.status_code == 401
    # S11: a cookie-authenticated change from another site is refused.
    cross_site = await laptop.delete(
        f"/v1/sessions/{target['id']}", headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status_code == 403
    assert (await phone.get("/v1/me")).status_code == 200


async def test_session_list_is_private_and_never_stored(app: Quart) -> None:
    # S20, S21: depends on the cookie, so no-store and Vary.
    laptop, _, _ = await _devices(app)
    response = await laptop.get("/v1/sessions")
    assert response.headers["Cache-Control"] == "no-store"
    assert {"Cookie", "Authorization"} <= set(response.vary)
