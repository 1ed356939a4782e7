"""OAuth 2.0 client credentials, introspection, and scopes for clients (S43, S44)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart

from tests.machine_support import (
    basic,
    bearer,
    client_token,
    logged_in_user,
    machine_app,
    machine_settings,
    new_key,
    services_of,
)
from tests.support.backing import Backing
from tests.support.tokens import claims_of, error_code, grant


@pytest.fixture(name="app")
async def _app(backing: Backing) -> AsyncIterator[Quart]:
    async with machine_app(machine_settings(backing)) as app:
        yield app


async def _client(app: Quart, scopes: list[str], audience: str | None = None) -> tuple[str, str]:
    created = await services_of(app).machine.clients.create("svc", scopes, audience)
    return str(created.record.id), created.secret


async def _oauth_error(response: Any, status: int) -> str:
    body = await response.get_json()
    assert response.status_code == status, body
    assert set(body) == {"error", "error_description"}
    assert response.headers["Cache-Control"] == "no-store"
    return str(body["error"])


async def test_basic_auth_grants_a_token_for_the_client(app: Quart) -> None:
    client_id, secret = await _client(app, ["reports"])
    response = await client_token(app.test_client(), client_id, secret)
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "reports"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    claims = claims_of(body["access_token"])
    assert claims["sub"] == client_id
    assert claims["client_id"] == client_id
    assert claims["aud"] == "keystile"
    assert claims["scope"] == "reports"


async def test_post_auth_grants_a_token(app: Quart) -> None:
    client_id, secret = await _client(app, ["reports", "account"])
    response = await app.test_client().post(
        "/v1/oauth/token",
        form={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": "reports",
        },
    )
    assert response.status_code == 200
    assert (await response.get_json())["scope"] == "reports"


async def test_unknown_client_is_invalid_client_with_basic_challenge(app: Quart) -> None:
    _, secret = await _client(app, ["reports"])
    response = await client_token(app.test_client(), str(uuid.uuid4()), secret)
    assert await _oauth_error(response, 401) == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


async def test_wrong_secret_is_invalid_client(app: Quart) -> None:
    client_id, _ = await _client(app, ["reports"])
    _, other_secret = await _client(app, ["reports"])
    response = await client_token(app.test_client(), client_id, other_secret)
    assert await _oauth_error(response, 401) == "invalid_client"
    posted = await app.test_client().post(
        "/v1/oauth/token",
        form={"grant_type": "client_credentials", "client_id": client_id, "client_secret": "x"},
    )
    assert await _oauth_error(posted, 401) == "invalid_client"


async def test_a_secret_with_a_bad_checksum_is_refused_without_a_database_query(
    backing: Backing,
) -> None:
    # S43: a malformed secret is refused before any lookup; a well-formed one is looked up.
    # No housekeeping or key refresh of its own runs a statement meanwhile.
    settings = machine_settings(
        backing, housekeeping_interval_seconds=0, signing_key_refresh_seconds=3600
    )
    async with machine_app(settings) as app:
        _, secret = await _client(app, ["reports"])
        broken = secret[:-1] + ("0" if secret[-1] != "0" else "1")
        statements: list[Any] = []
        database = services_of(app).database
        database.add_query_logger(statements.append)
        try:
            response = await client_token(app.test_client(), str(uuid.uuid4()), broken)
            assert await _oauth_error(response, 401) == "invalid_client"
            assert statements == []
            response = await client_token(app.test_client(), str(uuid.uuid4()), secret)
            assert await _oauth_error(response, 401) == "invalid_client"
            assert statements != []
        finally:
            database.remove_query_logger(statements.append)


async def test_missing_client_authentication_is_invalid_client(app: Quart) -> None:
    response = await app.test_client().post(
        "/v1/oauth/token", form={"grant_type": "client_credentials"}
    )
    assert await _oauth_error(response, 401) == "invalid_client"


async def test_other_grant_types_are_unsupported(app: Quart) -> None:
    client_id, secret = await _client(app, ["reports"])
    response = await app.test_client().post(
        "/v1/oauth/token", form={"grant_type": "password"}, headers=basic(client_id, secret)
    )
    assert await _oauth_error(response, 400) == "unsupported_grant_type"


async def test_scope_beyond_the_clients_is_invalid_scope(app: Quart) -> None:
    client_id, secret = await _client(app, ["reports"])
    response = await client_token(app.test_client(), client_id, secret, scope="reports account")
    assert await _oauth_error(response, 400) == "invalid_scope"


async def test_audience_other_than_the_registered_one_is_invalid_target(app: Quart) -> None:
    client_id, secret = await _client(app, ["reports"], audience="billing")
    allowed = await client_token(app.test_client(), client_id, secret, audience="billing")
    assert allowed.status_code == 200
    assert claims_of((await allowed.get_json())["access_token"])["aud"] == "billing"
    refused = await client_token(app.test_client(), client_id, secret, audience="payroll")
    assert await _oauth_error(refused, 400) == "invalid_target"


async def test_malformed_requests_are_invalid_request(app: Quart) -> None:
    client_id, secret = await _client(app, ["reports"])
    as_json = await app.test_client().post(
        "/v1/oauth/token",
        json={"grant_type": "client_credentials"},
        headers=basic(client_id, secret),
    )
    assert await _oauth_error(as_json, 400) == "invalid_request"
    both = await app.test_client().post(
        "/v1/oauth/token",
        form={"grant_type": "client_credentials", "client_secret": secret},
        headers=basic(client_id, secret),
    )
    assert await _oauth_error(both, 400) == "invalid_request"
    repeated = await app.test_client().post(
        "/v1/oauth/token",
        data="grant_type=client_credentials&scope=a&scope=b",
        headers={**basic(client_id, secret), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert await _oauth_error(repeated, 400) == "invalid_request"


async def test_grants_are_rate_limited_per_client(backing: Backing) -> None:
    settings = machine_settings(backing, rate_limit_client_credentials_per_client="2/minute")
    async with machine_app(settings) as app:
        client_id, secret = await _client(app, ["reports"])
        for _ in range(2):
            assert (await client_token(app.test_client(), client_id, secret)).status_code == 200
        refused = await client_token(app.test_client(), client_id, secret)
        assert await _oauth_error(refused, 429) == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        other_id, other_secret = await _client(app, ["reports"])
        assert (await client_token(app.test_client(), other_id, other_secret)).status_code == 200


async def _token(app: Quart, scopes: list[str]) -> tuple[str, str, str]:
    client_id, secret = await _client(app, scopes)
    response = await client_token(app.test_client(), client_id, secret)
    return client_id, secret, (await response.get_json())["access_token"]


async def test_client_token_is_scoped_and_never_acts_as_a_user(app: Quart) -> None:
    # S44: scopes are enforced for clients as for users and keys.
    _, _, reports = await _token(app, ["reports"])
    _, _, account = await _token(app, ["account"])
    caller = app.test_client()
    allowed = await caller.get("/probe/reports", headers=bearer(reports))
    assert allowed.status_code == 200
    assert (await allowed.get_json())["via"] == "client"
    refused = await caller.get("/probe/reports", headers=bearer(account))
    assert await error_code(refused, 403) == "insufficient_scope"
    assert refused.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
    for path in ("/v1/me", "/probe/user-reports", "/v1/me/api-keys"):
        assert await error_code(await caller.get(path, headers=bearer(account)), 403) in {
            "user_required"
        }


async def test_deleted_clients_tokens_are_refused(app: Quart) -> None:
    client_id, _, token = await _token(app, ["reports"])
    caller = app.test_client()
    assert (await caller.get("/probe/reports", headers=bearer(token))).status_code == 200
    await services_of(app).machine.clients.delete(uuid.UUID(client_id))
    response = await caller.get("/probe/reports", headers=bearer(token))
    assert await error_code(response) == "invalid_token"


async def _introspect(app: Quart, client_id: str, secret: str, token: str) -> dict[str, Any]:
    response = await app.test_client().post(
        "/v1/oauth/introspect", form={"token": token}, headers=basic(client_id, secret)
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    return await response.get_json()  # type: ignore[no-any-return]


async def test_introspection_describes_live_tokens_and_keys(app: Quart) -> None:
    client_id, secret, token = await _token(app, ["reports"])
    about_client = await _introspect(app, client_id, secret, token)
    assert about_client["active"] is True
    assert about_client["client_id"] == client_id
    assert about_client["scope"] == "reports"
    assert about_client["exp"] > about_client["iat"]

    owner, email = await logged_in_user(app)
    user_token = (await (await grant(app.test_client(), email)).get_json())["access_token"]
    about_user = await _introspect(app, client_id, secret, user_token)
    assert about_user["active"] is True
    assert "client_id" not in about_user
    key = (await new_key(owner, ["reports"]))["key"]
    about_key = await _introspect(app, client_id, secret, key)
    assert about_key["active"] is True
    assert about_key["scope"] == "reports"


async def test_introspection_says_inactive_for_dead_or_foreign_tokens(app: Quart) -> None:
    client_id, secret, _ = await _token(app, ["reports"])
    owner, email = await logged_in_user(app)
    user_token = (await (await grant(app.test_client(), email)).get_json())["access_token"]
    assert (await owner.post("/v1/me/logout-everywhere")).status_code == 204
    for token in (user_token, "not-a-token", "ks_pat_nonsense", "eyJhbGciOiJub25lIn0.e30."):
        assert await _introspect(app, client_id, secret, token) == {"active": False}


async def test_introspection_says_inactive_for_a_deleted_clients_token(app: Quart) -> None:
    # S43: a deleted client's tokens are dead for introspection too, not only for its routes.
    client_id, _, token = await _token(app, ["reports"])
    asker_id, asker_secret = await _client(app, ["reports"])
    assert (await _introspect(app, asker_id, asker_secret, token))["active"] is True
    await services_of(app).machine.clients.delete(uuid.UUID(client_id))
    assert await _introspect(app, asker_id, asker_secret, token) == {"active": False}


async def test_introspection_needs_client_authentication(app: Quart) -> None:
    response = await app.test_client().post("/v1/oauth/introspect", form={"token": "x"})
    assert await _oauth_error(response, 401) == "invalid_client"
