"""Re-authentication without a new login: POST /v1/me/reauthenticate and /reauth (S42)."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import pyotp
import pytest
from quart import Quart

from keystile.container import Overrides
from tests.machine_support import new_key
from tests.support.http import (
    PASSWORD,
    Client,
    from_ip,
    login,
    register,
    services_of,
    unique_email,
    unique_ip,
)
from tests.support.tokens import bearer, claims_of, error_code, grant, refresh
from tests.support.totp import Clock
from tests.webauthn_support import SoftAuthenticator, challenge_of

MakeApp = Callable[..., Awaitable[Quart]]
PUBLIC_URL = "https://id.example.com"
RP_ID = "id.example.com"


@pytest.fixture(name="clock")
def _clock() -> Clock:
    return Clock()


@pytest.fixture(name="app")
async def _app(make_app: MakeApp, clock: Clock) -> Quart:
    return await make_app(
        overrides=Overrides(mfa_clock=clock),
        public_url=PUBLIC_URL,
        cookie_secure=True,  # an https public_url needs Secure cookies (S8)
        login_backoff_account_free_failures=3,
        mfa_free_failures=3,
    )


async def logged_in(app: Quart) -> tuple[Client, str]:
    client = app.test_client()
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    return client, email


async def user_id(app: Quart, email: str) -> UUID:
    user = await services_of(app).users.select_user_by_email(email)
    assert user is not None
    return user.id


async def sessions_of(app: Quart, email: str) -> list[bytes]:
    rows = await services_of(app).database.fetch(
        "SELECT id_hash FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
        await user_id(app, email),
    )
    return [bytes(row["id_hash"]) for row in rows]


async def age_sessions(app: Quart, email: str) -> None:
    """Make every session of the user an hour old (older than reauth_max_age)."""
    services = services_of(app)
    hashes = await sessions_of(app, email)
    await services.database.execute(
        "UPDATE sessions SET created_at = now() - interval '1 hour', auth_time = NULL "
        "WHERE user_id = $1",
        await user_id(app, email),
    )
    for id_hash in hashes:
        await services.sessions.cache.invalidate(id_hash.hex())


async def age_families(app: Quart, email: str) -> None:
    await services_of(app).database.execute(
        "UPDATE refresh_token_families SET created_at = now() - interval '1 hour', "
        "auth_time = NULL WHERE user_id = $1",
        await user_id(app, email),
    )


async def audit_kinds(app: Quart, email: str) -> list[str]:
    rows = await services_of(app).database.fetch(
        "SELECT kind FROM audit_events WHERE user_id = $1 ORDER BY id", await user_id(app, email)
    )
    return [row["kind"] for row in rows]


async def test_a_stale_session_reauthenticates_in_place_and_may_then_add_a_factor(
    app: Quart,
) -> None:
    # S42: step-up required -> password -> the same session may now do it.
    client, email = await logged_in(app)
    await age_sessions(app, email)
    before = await sessions_of(app, email)
    refused = await client.post("/v1/me/mfa/totp")
    assert await error_code(refused, 401) == "reauthentication_required"

    answer = await client.post("/v1/me/reauthenticate", json={"password": PASSWORD})
    assert answer.status_code == 200, await answer.get_data(as_text=True)
    body = await answer.get_json()
    assert body["amr"] == ["pwd"]
    assert body.get("access_token") is None  # a cookie caller gets no token
    assert "Set-Cookie" not in answer.headers  # the cookie, and so the session id, stay
    assert answer.headers["Cache-Control"] == "no-store"

    assert (await client.post("/v1/me/mfa/totp")).status_code == 201
    assert await sessions_of(app, email) == before  # no second session
    assert "reauthenticated" in await audit_kinds(app, email)


async def test_a_bearer_caller_gets_a_fresh_access_token_of_the_same_family(app: Quart) -> None:
    # S42: a new access token with auth_time now and amr; the refresh token keeps working
    # and its next access token carries the new auth_time too.
    client = app.test_client()
    email = unique_email()
    await register(client, email)
    first = await (await grant(client, email)).get_json()
    await age_families(app, email)
    stale = await (await refresh(client, first["refresh_token"])).get_json()
    assert claims_of(stale["access_token"])["auth_time"] < time.time() - 3000
    refused = await client.post("/v1/me/mfa/totp", headers=bearer(stale["access_token"]))
    assert await error_code(refused, 401) == "reauthentication_required"

    started = int(time.time())
    answer = await client.post(
        "/v1/me/reauthenticate",
        json={"password": PASSWORD},
        headers=bearer(stale["access_token"]),
    )
    assert answer.status_code == 200, await answer.get_data(as_text=True)
    body = await answer.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    assert "refresh_token" not in body
    claims = claims_of(body["access_token"])
    assert claims["auth_time"] >= started
    assert claims["amr"] == ["pwd"]
    assert claims["sid"] == claims_of(stale["access_token"])["sid"]  # the same family

    allowed = await client.post("/v1/me/mfa/totp", headers=bearer(body["access_token"]))
    assert allowed.status_code == 201, await allowed.get_data(as_text=True)
    again = await (await refresh(client, stale["refresh_token"])).get_json()
    assert claims_of(again["access_token"])["auth_time"] >= started


async def test_a_wrong_password_is_refused_throttled_and_audited(app: Quart) -> None:
    # S42 with S5/S6's login backoff: after the free failures (3 here), 429 + Retry-After.
    client, email = await logged_in(app)
    address = from_ip(unique_ip())
    statuses = []
    for _ in range(5):
        response = await client.post(
            "/v1/me/reauthenticate", json={"password": "not it at all"}, **address
        )
        statuses.append(response.status_code)
        if response.status_code == 401:
            assert (await response.get_json())["error"]["code"] == "invalid_credentials"
    assert statuses[:3] == [401, 401, 401]
    assert statuses[-1] == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert "reauthentication_failed" in await audit_kinds(app, email)


async def test_a_totp_code_reauthenticates_and_a_wrong_one_is_refused(
    app: Quart, clock: Clock
) -> None:
    # S39, S42: a current code refreshes the login (amr gains otp); a wrong one is 401.
    client, email = await logged_in(app)
    started = await (await client.post("/v1/me/mfa/totp")).get_json()
    totp = pyotp.TOTP(started["secret"])
    confirmed = await client.post("/v1/me/mfa/totp/confirm", json={"code": totp.at(clock.now)})
    assert confirmed.status_code == 200
    clock.now += 30  # the confirming step is used up
    await age_sessions(app, email)
    wrong = "000000" if totp.at(clock.now) != "000000" else "111111"
    refused = await client.post("/v1/me/reauthenticate", json={"code": wrong})
    assert await error_code(refused, 401) == "invalid_mfa_code"
    answer = await client.post("/v1/me/reauthenticate", json={"code": totp.at(clock.now)})
    assert answer.status_code == 200, await answer.get_data(as_text=True)
    assert (await answer.get_json())["amr"] == ["otp", "pwd"]
    replayed = await client.post("/v1/me/reauthenticate", json={"code": totp.at(clock.now)})
    assert await error_code(replayed, 401) == "invalid_mfa_code"


async def test_exactly_one_proof_is_accepted(app: Quart) -> None:
    client, _ = await logged_in(app)
    for body in ({}, {"password": PASSWORD, "code": "123456"}):
        response = await client.post("/v1/me/reauthenticate", json=body)
        assert response.status_code == 422, await response.get_data(as_text=True)


async def add_passkey(client: Client, authenticator: SoftAuthenticator) -> None:
    options = await (await client.post("/v1/me/passkeys/options", json={})).get_json()
    handle = options["user"]["id"]
    authenticator.user_handle = base64.urlsafe_b64decode(handle + "=" * (-len(handle) % 4))
    response = await client.post(
        "/v1/me/passkeys", json={"credential": authenticator.register(challenge_of(options))}
    )
    assert response.status_code == 201, await response.get_data(as_text=True)


async def passkey_options(client: Client) -> dict[str, Any]:
    response = await client.post("/v1/me/reauthenticate/passkey/options")
    assert response.status_code == 200, await response.get_data(as_text=True)
    return dict(await response.get_json())


async def test_only_my_own_passkey_reauthenticates_me(app: Quart) -> None:
    # S41, S42: another user's (valid, registered) passkey is refused.
    mine, my_email = await logged_in(app)
    theirs, _ = await logged_in(app)
    my_key = SoftAuthenticator(RP_ID, PUBLIC_URL)
    their_key = SoftAuthenticator(RP_ID, PUBLIC_URL)
    await add_passkey(mine, my_key)
    await add_passkey(theirs, their_key)
    await age_sessions(app, my_email)

    options = await passkey_options(mine)
    assert len(options["allowCredentials"]) == 1
    refused = await mine.post(
        "/v1/me/reauthenticate/passkey",
        json={"credential": their_key.sign(challenge_of(options))},
    )
    assert await error_code(refused, 401) == "invalid_passkey"

    options = await passkey_options(mine)
    answer = await mine.post(
        "/v1/me/reauthenticate/passkey", json={"credential": my_key.sign(challenge_of(options))}
    )
    assert answer.status_code == 200, await answer.get_data(as_text=True)
    assert "hwk" in (await answer.get_json())["amr"]
    assert "reauthentication_failed" in await audit_kinds(app, my_email)


async def test_an_api_key_cannot_reauthenticate(app: Quart) -> None:
    client, _ = await logged_in(app)
    key = (await new_key(client))["key"]
    response = await app.test_client().post(
        "/v1/me/reauthenticate", json={"password": PASSWORD}, headers=bearer(key)
    )
    assert await error_code(response, 403) == "reauthentication_unsupported"


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match is not None
    return match.group(1)


async def test_the_step_up_page_refreshes_this_session_and_goes_back(app: Quart) -> None:
    # S42 on the pages: a stale session is sent to /reauth, not to a second login.
    client, email = await logged_in(app)
    await age_sessions(app, email)
    before = await sessions_of(app, email)
    account = await (await client.get("/account")).get_data(as_text=True)
    sent = await client.post("/account/mfa/totp", form={"csrf_token": _csrf(account)})
    assert sent.status_code == 303
    assert sent.headers["Location"].startswith("/reauth?next=/account")

    page = await client.get("/reauth?next=/account")
    html = await page.get_data(as_text=True)
    assert page.status_code == 200, html
    assert 'action="/reauth"' in html
    assert "<script>" not in html  # CSP: no inline script
    wrong = await client.post(
        "/reauth", form={"csrf_token": _csrf(html), "password": "nope", "next": "/account"}
    )
    assert wrong.status_code == 401
    offsite = await client.post(
        "/reauth",
        form={"csrf_token": _csrf(html), "password": PASSWORD, "next": "https://evil.example/"},
    )
    assert offsite.status_code == 303
    assert offsite.headers["Location"] == "/account"  # same-origin paths only
    assert await sessions_of(app, email) == before
    account = await (await client.get("/account")).get_data(as_text=True)
    added = await client.post("/account/mfa/totp", form={"csrf_token": _csrf(account)})
    assert added.status_code == 201


async def test_the_page_without_a_session_sends_to_login(app: Quart) -> None:
    response = await app.test_client().get("/reauth?next=/account")
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login")
