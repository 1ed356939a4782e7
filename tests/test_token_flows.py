"""API tokens end to end: password grant, bearer requests, refresh, revoke, scopes."""

from __future__ import annotations

import secrets

import asyncpg
from quart import Blueprint, Quart

from keystile.app import create_app
from keystile.services.tokens import hash_refresh_token
from keystile.web.auth import get_principal, requires_auth
from tests.support.backing import Backing, make_settings
from tests.support.http import PASSWORD, Client, from_ip, login, register, services_of, unique_email
from tests.support.tokens import bearer, claims_of, error_code, grant, new_user_tokens, refresh


async def test_password_grant_returns_tokens_that_authenticate(client: Client) -> None:
    email, body = await new_user_tokens(client)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "account"
    assert len(body["refresh_token"]) >= 43  # 256 bits, base64url
    claims = claims_of(body["access_token"])
    assert {"iss", "aud", "sub", "iat", "nbf", "exp", "jti", "scope", "epoch"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 900
    assert "email" not in claims  # no personal data in a token anyone can decode

    me = await client.get("/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert await me.get_json() == {
        "id": claims["sub"],
        "email": email,
        "email_verified": False,
        "authenticated_via": "bearer",
    }


async def test_token_responses_are_never_stored(client: Client) -> None:
    # S20: token endpoints answer no-store (and Pragma for HTTP/1.0 caches).
    _, body = await new_user_tokens(client)
    response = await refresh(client, body["refresh_token"])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert "Set-Cookie" not in response.headers


async def test_bearer_response_varies_on_authorization(client: Client) -> None:
    # S21: a response chosen by the Authorization header is never shared.
    _, body = await new_user_tokens(client)
    response = await client.get("/v1/me", headers=bearer(body["access_token"]))
    assert {"Cookie", "Authorization"} <= set(response.vary)
    assert response.headers["Cache-Control"] == "no-store"


async def test_wrong_password_grant_is_refused_like_a_login(client: Client) -> None:
    # S6: same answer for a wrong password and an unknown account.
    email = unique_email()
    await register(client, email)
    wrong = await grant(client, email, "not the password at all")
    unknown = await grant(client, unique_email())
    assert await error_code(wrong) == "invalid_credentials"
    assert await wrong.get_data() == await unknown.get_data()


async def test_refresh_rotates_and_the_new_pair_works(client: Client) -> None:
    _, first = await new_user_tokens(client)
    response = await refresh(client, first["refresh_token"])
    assert response.status_code == 200
    second = await response.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == first["scope"]
    assert (await client.get("/v1/me", headers=bearer(second["access_token"]))).status_code == 200
    third = await refresh(client, second["refresh_token"])
    assert third.status_code == 200


async def test_unknown_refresh_token_is_refused(client: Client) -> None:
    response = await refresh(client, "A" * 43)
    assert await error_code(response) == "invalid_refresh_token"


async def test_only_hashes_of_refresh_tokens_are_stored(client: Client, backing: Backing) -> None:
    # S18: the database holds SHA-256 of the token, never the token.
    _, body = await new_user_tokens(client)
    connection = await asyncpg.connect(backing.database_url)
    try:
        stored = await connection.fetchval(
            "SELECT token_hash FROM refresh_tokens WHERE token_hash = $1",
            hash_refresh_token(body["refresh_token"]),
        )
        as_text = await connection.fetchval(
            "SELECT count(*) FROM refresh_tokens WHERE encode(token_hash, 'escape') = $1",
            body["refresh_token"],
        )
    finally:
        await connection.close()
    assert stored == hash_refresh_token(body["refresh_token"])
    assert as_text == 0


async def test_revoking_a_refresh_token_refuses_it(client: Client) -> None:
    _, body = await new_user_tokens(client)
    response = await client.post("/v1/tokens/revoke", json={"refresh_token": body["refresh_token"]})
    assert response.status_code == 204
    assert await error_code(await refresh(client, body["refresh_token"])) == (
        "invalid_refresh_token"
    )


async def test_revoking_the_family_refuses_every_member(client: Client) -> None:
    _, first = await new_user_tokens(client)
    second = await (await refresh(client, first["refresh_token"])).get_json()
    response = await client.post(
        "/v1/tokens/revoke", json={"refresh_token": first["refresh_token"], "family": True}
    )
    assert response.status_code == 204
    assert (await refresh(client, second["refresh_token"])).status_code == 401


async def test_revoking_an_unknown_token_answers_the_same(client: Client) -> None:
    # RFC 7009: no oracle for which tokens exist.
    response = await client.post("/v1/tokens/revoke", json={"refresh_token": "B" * 43})
    assert response.status_code == 204


async def test_unknown_scope_is_refused(client: Client) -> None:
    email = unique_email()
    await register(client, email)
    response = await grant(client, email, scope="account admin")
    assert await error_code(response, 422) == "invalid_scope"


async def test_bearer_logout_everywhere_needs_no_csrf_check(client: Client) -> None:
    # S11 applies to cookies only: a browser never attaches a bearer token by itself.
    _, body = await new_user_tokens(client)
    response = await client.post(
        "/v1/me/logout-everywhere",
        headers={**bearer(body["access_token"]), "Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 204
    assert "Set-Cookie" not in response.headers
    me = await client.get("/v1/me", headers=bearer(body["access_token"]))
    assert await error_code(me) == "token_revoked"
    assert (await refresh(client, body["refresh_token"])).status_code == 401


async def test_cookie_logout_everywhere_also_ends_tokens(client: Client) -> None:
    # S17 via the cookie path; the CSRF check still applies to it (S11).
    email, body = await new_user_tokens(client)
    assert (await login(client, email)).status_code == 201
    cross = await client.post("/v1/me/logout-everywhere", headers={"Sec-Fetch-Site": "cross-site"})
    assert await error_code(cross, 403) == "csrf_failed"
    assert (await client.post("/v1/me/logout-everywhere")).status_code == 204
    assert (await client.get("/v1/me", headers=bearer(body["access_token"]))).status_code == 401
    assert (await refresh(client, body["refresh_token"])).status_code == 401


async def test_bearer_password_change_ends_every_token(client: Client) -> None:
    # S3: the change needs the current password and ends every token family.
    email, body = await new_user_tokens(client)
    headers = bearer(body["access_token"])
    response = await client.post(
        "/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        headers=headers,
    )
    assert response.status_code == 204
    assert await error_code(await client.get("/v1/me", headers=headers)) == "token_revoked"
    assert (await refresh(client, body["refresh_token"])).status_code == 401
    assert (await grant(client, email, "a brand new passphrase")).status_code == 200


async def test_disabled_user_loses_its_tokens(app: Quart, client: Client) -> None:
    # S10: disabling ends the user's token families and access tokens.
    email, body = await new_user_tokens(client)
    await services_of(app).admin.disable_user(email)
    assert (await client.get("/v1/me", headers=bearer(body["access_token"]))).status_code == 401
    assert (await refresh(client, body["refresh_token"])).status_code == 401


async def test_requires_auth_guards_an_extension_blueprint_by_scope(backing: Backing) -> None:
    reports = Blueprint("reports", __name__)

    @reports.get("/v1/reports")
    @requires_auth(scopes=["reports"])
    async def read_reports() -> dict[str, str]:
        return {"user": str(get_principal().user_id), "via": get_principal().via}

    app = create_app(make_settings(backing, token_scopes=["account", "reports"]))
    app.register_blueprint(reports)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        email = unique_email()
        await register(client, email)
        narrow = await (await grant(client, email, scope="account")).get_json()
        wide = await (await grant(client, email, scope="reports")).get_json()

        refused = await client.get("/v1/reports", headers=bearer(narrow["access_token"]))
        assert await error_code(refused, 403) == "insufficient_scope"
        assert refused.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
        allowed = await client.get("/v1/reports", headers=bearer(wide["access_token"]))
        assert allowed.status_code == 200
        assert (await allowed.get_json())["via"] == "bearer"
        assert "Authorization" in allowed.vary

        assert await error_code(await client.get("/v1/reports")) == "not_authenticated"
        assert (await login(client, email)).status_code == 201
        by_cookie = await client.get("/v1/reports")
        assert by_cookie.status_code == 200
        assert (await by_cookie.get_json())["via"] == "session"


async def test_token_and_refresh_endpoints_are_rate_limited(backing: Backing) -> None:
    # S27: the password grant and refresh count per client address (shared in Redis).
    settings = make_settings(
        backing, rate_limit_token_per_ip="2/minute", rate_limit_refresh_per_ip="2/minute"
    )
    app = create_app(settings)
    address = from_ip(f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}")
    async with app.test_app() as test_app:
        client = test_app.test_client()
        email = unique_email()
        await register(client, email)
        body = {"email": email, "password": PASSWORD}
        first = await (await client.post("/v1/tokens", json=body, **address)).get_json()
        assert (await client.post("/v1/tokens", json=body, **address)).status_code == 200
        limited = await client.post("/v1/tokens", json=body, **address)
        assert await error_code(limited, 429) == "rate_limited"
        assert "Retry-After" in limited.headers

        refresh_body = {"refresh_token": first["refresh_token"]}
        assert (
            await client.post("/v1/tokens/refresh", json=refresh_body, **address)
        ).status_code == 200
        unknown = {"refresh_token": "C" * 43}
        assert (await client.post("/v1/tokens/refresh", json=unknown, **address)).status_code == 401
        again = await client.post("/v1/tokens/refresh", json=unknown, **address)
        assert await error_code(again, 429) == "rate_limited"
