"""Passkeys through the API with a software authenticator (S41, S42)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from quart import Quart

from tests.support.http import Client, login, register, services_of, unique_email
from tests.support.tokens import claims_of, error_code
from tests.webauthn_support import SoftAuthenticator, b64url, challenge_of

MakeApp = Callable[..., Awaitable[Quart]]
PUBLIC_URL = "https://id.example.com"
RP_ID = "id.example.com"


@pytest.fixture(name="passkey_app")
async def _passkey_app(make_app: MakeApp) -> Quart:
    return await make_app(public_url=PUBLIC_URL, cookie_secure=True)


async def logged_in(app: Quart) -> tuple[Client, str]:
    client = app.test_client()
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    return client, email


async def add_passkey(client: Client, authenticator: SoftAuthenticator) -> dict[str, Any]:
    options = await (await client.post("/v1/me/passkeys/options", json={})).get_json()
    assert options["rp"]["id"] == RP_ID
    assert options["authenticatorSelection"]["residentKey"] == "required"
    user_id = options["user"]["id"]
    authenticator.user_handle = base64.urlsafe_b64decode(user_id + "=" * (-len(user_id) % 4))
    response = await client.post(
        "/v1/me/passkeys",
        json={"credential": authenticator.register(challenge_of(options)), "name": "Laptop"},
    )
    assert response.status_code == 201, await response.get_data(as_text=True)
    return dict(await response.get_json())


async def stored_passkeys(app: Quart, email: str) -> int:
    count: int = await services_of(app).database.fetchval(
        "SELECT count(*) FROM webauthn_credentials c JOIN users u ON u.id = c.user_id "
        "WHERE u.email = $1",
        email,
    )
    return count


async def last_events(app: Quart, email: str, count: int) -> list[tuple[str, Any]]:
    rows = await services_of(app).database.fetch(
        "SELECT e.kind, e.detail->'amr' AS amr FROM audit_events e "
        "JOIN users u ON u.id = e.user_id WHERE u.email = $1 ORDER BY e.id DESC LIMIT $2",
        email,
        count,
    )
    return [(row["kind"], json.loads(row["amr"])) for row in reversed(rows)]


async def login_options(client: Client, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/passkeys/login/options", json=body)
    assert response.status_code == 200, await response.get_data(as_text=True)
    return dict(await response.get_json())


async def test_register_list_rename_and_log_in_without_a_password(passkey_app: Quart) -> None:
    # S41: registration, then a passwordless login; amr says hwk.
    client, email = await logged_in(passkey_app)
    authenticator = SoftAuthenticator(RP_ID, PUBLIC_URL)
    created = await add_passkey(client, authenticator)
    assert created["name"] == "Laptop"
    assert len(created["recovery_codes"]) == 10  # the first factor
    listed = await (await client.get("/v1/me/passkeys")).get_json()
    assert [p["name"] for p in listed["passkeys"]] == ["Laptop"]
    renamed = await client.patch(f"/v1/me/passkeys/{created['id']}", json={"name": "Work"})
    assert renamed.status_code == 204

    fresh = passkey_app.test_client()
    options = await login_options(fresh, mode="tokens")
    assert options["allowCredentials"] == []  # discoverable: the passkey names the user
    answer = await fresh.post(
        "/v1/passkeys/login",
        json={"mode": "tokens", "credential": authenticator.sign(challenge_of(options))},
    )
    assert answer.status_code == 200, await answer.get_data(as_text=True)
    assert claims_of((await answer.get_json())["access_token"])["amr"] == ["hwk"]
    # Both events committed with the token family, in one statement.
    assert await last_events(passkey_app, email, 2) == [
        ("mfa_succeeded", ["hwk"]),
        ("login", ["hwk"]),
    ]


async def test_a_passkey_is_the_second_factor_after_the_password(passkey_app: Quart) -> None:
    # S42: password -> mfa_required (factors list passkey) -> assertion -> session.
    client, email = await logged_in(passkey_app)
    authenticator = SoftAuthenticator(RP_ID, PUBLIC_URL)
    await add_passkey(client, authenticator)
    browser = passkey_app.test_client()
    refused = await login(browser, email)
    assert await error_code(refused, 401) == "mfa_required"
    body = await refused.get_json()
    assert body["factors"] == ["passkey", "recovery_code"]
    options = await login_options(browser, mfa_token=body["mfa_token"])
    assert len(options["allowCredentials"]) == 1
    done = await browser.post(
        "/v1/passkeys/login",
        json={
            "mode": "session",
            "mfa_token": body["mfa_token"],
            "credential": authenticator.sign(challenge_of(options)),
        },
    )
    assert done.status_code == 201, await done.get_data(as_text=True)
    assert (await browser.get("/v1/me")).status_code == 200
    assert await last_events(passkey_app, email, 2) == [
        ("mfa_succeeded", ["pwd", "hwk"]),
        ("login", ["pwd", "hwk"]),
    ]


@pytest.mark.parametrize("fault", ["challenge", "origin", "rp_id", "malformed", "oversized"])
async def test_a_bad_registration_is_a_clear_4xx_and_stores_nothing(
    passkey_app: Quart, fault: str
) -> None:
    # S41: wrong challenge, wrong origin, another rp id, malformed, oversized: refused.
    client, email = await logged_in(passkey_app)
    options = await (await client.post("/v1/me/passkeys/options", json={})).get_json()
    authenticator = SoftAuthenticator(RP_ID, PUBLIC_URL)
    challenge = challenge_of(options)
    credential: Any
    if fault == "challenge":
        credential = authenticator.register(bytes(32))
    elif fault == "origin":
        credential = authenticator.register(challenge, origin="https://evil.example")
    elif fault == "rp_id":
        credential = authenticator.register(challenge, rp_id="evil.example")
    elif fault == "malformed":
        credential = {"id": "x", "response": {"clientDataJSON": "!!", "attestationObject": 5}}
    else:
        credential = authenticator.register(challenge)
        credential["response"]["attestationObject"] += "A" * 20_000
    response = await client.post("/v1/me/passkeys", json={"credential": credential})
    if fault == "oversized":  # refused before it is even read
        assert await error_code(response, 413) == "request_too_large"
    else:
        assert await error_code(response, 422) == "invalid_webauthn"
    assert await stored_passkeys(passkey_app, email) == 0


async def test_a_challenge_lives_for_the_configured_ttl_and_not_after(make_app: MakeApp) -> None:
    # S41: mfa_challenge_ttl_seconds bounds a passkey ceremony, not only the mfa_token.
    app = await make_app(public_url=PUBLIC_URL, cookie_secure=True, mfa_challenge_ttl_seconds=45)
    client, email = await logged_in(app)
    options = await (await client.post("/v1/me/passkeys/options", json={})).get_json()
    challenge = challenge_of(options)
    # Where the challenge store keeps it (stores/challenges.py): only its key's SHA-256.
    name = f"webauthn-register:{b64url(challenge)}".encode()
    key = "keystile:challenge:" + hashlib.sha256(name).hexdigest()
    redis = services_of(app).redis
    ttl = await redis.ttl(key)
    assert 40 < ttl <= 45
    await redis.expire(key, ttl - 45)  # 45 seconds later: gone
    credential = SoftAuthenticator(RP_ID, PUBLIC_URL).register(challenge)
    response = await client.post("/v1/me/passkeys", json={"credential": credential})
    assert await error_code(response, 422) == "invalid_webauthn"
    assert await stored_passkeys(app, email) == 0


async def test_a_challenge_works_once(passkey_app: Quart) -> None:
    # S41: a registration challenge is single use.
    client, email = await logged_in(passkey_app)
    options = await (await client.post("/v1/me/passkeys/options", json={})).get_json()
    first = SoftAuthenticator(RP_ID, PUBLIC_URL)
    ok = await client.post(
        "/v1/me/passkeys", json={"credential": first.register(challenge_of(options))}
    )
    assert ok.status_code == 201
    second = SoftAuthenticator(RP_ID, PUBLIC_URL)
    again = await client.post(
        "/v1/me/passkeys", json={"credential": second.register(challenge_of(options))}
    )
    assert await error_code(again, 422) == "invalid_webauthn"
    assert await stored_passkeys(passkey_app, email) == 1


@pytest.mark.parametrize("fault", ["rp_id", "origin", "counter"])
async def test_a_bad_assertion_is_refused(passkey_app: Quart, fault: str) -> None:
    # S41: a credential used for another rp id or origin, or a counter going back: refused.
    client, email = await logged_in(passkey_app)
    authenticator = SoftAuthenticator(RP_ID, PUBLIC_URL)
    await add_passkey(client, authenticator)
    fresh = passkey_app.test_client()
    if fault == "counter":
        options = await login_options(fresh, mode="tokens")
        authenticator.sign_count = 10
        used = await fresh.post(
            "/v1/passkeys/login",
            json={"mode": "tokens", "credential": authenticator.sign(challenge_of(options))},
        )
        assert used.status_code == 200
    options = await login_options(fresh, mode="tokens")
    challenge = challenge_of(options)
    if fault == "rp_id":
        credential = authenticator.sign(challenge, rp_id="evil.example")
    elif fault == "origin":
        credential = authenticator.sign(challenge, origin="https://evil.example")
    else:
        credential = authenticator.sign(challenge, count=5)  # a clone's older counter
    response = await fresh.post(
        "/v1/passkeys/login", json={"mode": "tokens", "credential": credential}
    )
    assert await error_code(response, 401) == "invalid_passkey"
    if fault == "counter":
        user = await services_of(passkey_app).users.select_user_by_email(email)
        assert user is not None
        kinds = await services_of(passkey_app).database.fetch(
            "SELECT kind FROM audit_events WHERE user_id = $1", user.id
        )
        assert "passkey_counter_regression" in [row["kind"] for row in kinds]


async def test_a_sign_counter_moves_on_from_the_value_read_only_once(passkey_app: Quart) -> None:
    # S41: of two logins that read the same counter (a passkey and its clone, at once),
    # only one moves it on; `PasskeyService` refuses the other and audits a regression.
    client, email = await logged_in(passkey_app)
    await add_passkey(client, SoftAuthenticator(RP_ID, PUBLIC_URL))
    user = await services_of(passkey_app).users.select_user_by_email(email)
    assert user is not None
    repository = services_of(passkey_app).passkeys.repository
    (passkey,) = await repository.select_passkeys(user.id)
    read = passkey.sign_count
    assert await repository.update_passkey_use(passkey.id, read, read + 1, False)
    assert not await repository.update_passkey_use(passkey.id, read, read + 2, False)
    (after,) = await repository.select_passkeys(user.id)
    assert after.sign_count == read + 1


async def test_the_last_passkey_goes_only_after_a_passkey_login(passkey_app: Quart) -> None:
    # S42: a password session may not remove the only factor; a passkey session may.
    client, _ = await logged_in(passkey_app)
    authenticator = SoftAuthenticator(RP_ID, PUBLIC_URL)
    created = await add_passkey(client, authenticator)
    refused = await client.delete(f"/v1/me/passkeys/{created['id']}")
    assert await error_code(refused, 401) == "factor_required"
    fresh = passkey_app.test_client()
    options = await login_options(fresh)
    assert (
        await fresh.post(
            "/v1/passkeys/login", json={"credential": authenticator.sign(challenge_of(options))}
        )
    ).status_code == 201
    removed = await fresh.delete(f"/v1/me/passkeys/{created['id']}")
    assert removed.status_code == 204, await removed.get_data(as_text=True)


async def test_a_passwordless_login_keeps_the_email_verification_rule(
    passkey_app: Quart, make_app: MakeApp
) -> None:
    # With email_verification = "required", a passkey alone does not get past it either.
    client, _ = await logged_in(passkey_app)
    authenticator = SoftAuthenticator(RP_ID, PUBLIC_URL)
    await add_passkey(client, authenticator)
    strict = await make_app(
        public_url=PUBLIC_URL, cookie_secure=True, email_verification="required"
    )
    fresh = strict.test_client()
    options = await login_options(fresh, mode="tokens")
    response = await fresh.post(
        "/v1/passkeys/login",
        json={"mode": "tokens", "credential": authenticator.sign(challenge_of(options))},
    )
    assert await error_code(response, 403) == "email_not_verified"
