"""API keys: shown once, stored as an HMAC, checked without I/O, scoped, revocable (S43, S44)."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart

from keystile.app import create_app
from keystile.services.opaque_secrets import with_checksum
from tests.machine_support import (
    MachineProbe,
    bearer,
    create_key,
    logged_in_user,
    machine_app,
    machine_settings,
    new_key,
    services_of,
)
from tests.support.backing import Backing
from tests.support.http import PASSWORD, eventually_status
from tests.support.tokens import error_code, grant

KEY_FORMAT = re.compile(r"ks_pat_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}")


@pytest.fixture(name="app")
async def _app(backing: Backing) -> AsyncIterator[Quart]:
    async with machine_app(machine_settings(backing)) as app:
        yield app


async def test_created_key_is_shown_once_and_authenticates_as_its_user(app: Quart) -> None:
    # S43: the key comes back once, in a scanner-friendly format; only its HMAC is stored.
    owner, email = await logged_in_user(app)
    created = await new_key(owner, ["account"])
    assert KEY_FORMAT.fullmatch(created["key"])
    assert created["id"] in created["key"]

    me = await app.test_client().get("/v1/me", headers=bearer(created["key"]))
    assert me.status_code == 200
    assert await me.get_json() == {
        "id": (await me.get_json())["id"],
        "email": email,
        "email_verified": False,
        "authenticated_via": "api_key",
    }
    listed = await (await owner.get("/v1/me/api-keys")).get_json()
    (entry,) = listed["api_keys"]
    assert entry["id"] == created["id"]
    assert "key" not in entry
    assert created["key"] not in str(listed)

    stored = await services_of(app).database.fetchrow(
        "SELECT * FROM api_keys WHERE id = $1", created["id"]
    )
    assert stored is not None
    secret_part = created["key"].split("_")[-1][:-6]
    assert len(stored["secret_hmac"]) == 32
    assert all(secret_part not in str(value) for value in dict(stored).values())


async def test_key_scopes_are_enforced(app: Quart) -> None:
    # S44: an API key grants its own scopes only.
    owner, _ = await logged_in_user(app)
    account_only = (await new_key(owner, ["account"]))["key"]
    reports = (await new_key(owner, ["reports"]))["key"]
    caller = app.test_client()

    refused = await caller.get("/probe/reports", headers=bearer(account_only))
    assert await error_code(refused, 403) == "insufficient_scope"
    assert refused.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
    allowed = await caller.get("/probe/reports", headers=bearer(reports))
    assert allowed.status_code == 200
    assert (await allowed.get_json())["via"] == "api_key"


async def test_a_route_needing_two_scopes_refuses_a_key_with_one_of_them(app: Quart) -> None:
    # S44: every scope a route names is needed, not any one of them.
    owner, _ = await logged_in_user(app)
    reports = (await new_key(owner, ["reports"]))["key"]
    both = (await new_key(owner, ["account", "reports"]))["key"]
    caller = app.test_client()
    refused = await caller.get("/probe/account-and-reports", headers=bearer(reports))
    assert await error_code(refused, 403) == "insufficient_scope"
    allowed = await caller.get("/probe/account-and-reports", headers=bearer(both))
    assert allowed.status_code == 200


async def test_a_scope_the_deployment_no_longer_offers_is_no_longer_granted(
    backing: Backing,
) -> None:
    # S44: a key keeps only the scopes still configured; dropping one ends its use.
    secret_key = secrets.token_hex(32)  # the same deployment, restarted with fewer scopes
    async with machine_app(machine_settings(backing, secret_key=secret_key)) as before:
        owner, _ = await logged_in_user(before)
        key = (await new_key(owner, ["account", "reports"]))["key"]
        allowed = await before.test_client().get("/probe/reports", headers=bearer(key))
        assert allowed.status_code == 200
    fewer = machine_settings(backing, secret_key=secret_key, token_scopes=["account"])
    async with machine_app(fewer) as after:
        refused = await after.test_client().get("/probe/reports", headers=bearer(key))
        assert await error_code(refused, 403) == "insufficient_scope"


async def test_key_cannot_have_scopes_its_creator_lacks(app: Quart) -> None:
    _owner, email = await logged_in_user(app)
    token = (await (await grant(app.test_client(), email, scope="account")).get_json())[
        "access_token"
    ]
    response = await app.test_client().post(
        "/v1/me/api-keys",
        json={"name": "x", "scopes": ["reports"], "expires_in_days": 1},
        headers=bearer(token),
    )
    assert await error_code(response, 422) == "invalid_input"


async def test_expiry_is_required_and_bounded(app: Quart) -> None:
    owner, _ = await logged_in_user(app)
    missing = await owner.post("/v1/me/api-keys", json={"name": "x", "scopes": ["account"]})
    assert missing.status_code == 422
    too_long = await create_key(owner, expires_in_days=366)
    assert await error_code(too_long, 422) == "invalid_input"


async def test_api_key_cannot_create_api_keys(app: Quart) -> None:
    owner, _ = await logged_in_user(app)
    key = (await new_key(owner))["key"]
    response = await create_key(app.test_client(), headers=bearer(key))
    assert await error_code(response, 403) == "forbidden"


async def test_expired_key_is_refused(app: Quart) -> None:
    owner, _ = await logged_in_user(app)
    created = await new_key(owner)
    await services_of(app).database.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
        created["id"],
    )
    response = await app.test_client().get("/v1/me", headers=bearer(created["key"]))
    assert await error_code(response) == "invalid_token"


async def test_wrong_secret_with_a_valid_id_is_refused(app: Quart) -> None:
    # S43: the id is public; the secret is compared as an HMAC in constant time.
    owner, _ = await logged_in_user(app)
    created = await new_key(owner)
    body = created["key"][:-6]
    forged = with_checksum(body[:-1] + ("A" if body[-1] != "A" else "B"))
    response = await app.test_client().get("/v1/me", headers=bearer(forged))
    assert await error_code(response) == "invalid_token"
    genuine = await app.test_client().get("/v1/me", headers=bearer(created["key"]))
    assert genuine.status_code == 200


async def test_bad_checksum_is_refused_without_a_database_query(backing: Backing) -> None:
    # S43: a mistyped or made-up key costs no lookup at all.
    settings = machine_settings(
        backing, housekeeping_interval_seconds=0, signing_key_refresh_seconds=3600
    )
    async with machine_app(settings) as app:
        owner, _ = await logged_in_user(app)
        key = (await new_key(owner))["key"]
        statements: list[Any] = []
        database = services_of(app).database
        database.add_query_logger(statements.append)
        try:
            broken = key[:-1] + ("0" if key[-1] != "0" else "1")
            response = await app.test_client().get("/v1/me", headers=bearer(broken))
            assert await error_code(response) == "invalid_token"
            assert statements == []
            # The counter does see lookups: a well-formed unknown key needs one.
            unknown = with_checksum("ks_pat_" + "Z" * 12 + "_" + "Q" * 32)
            response = await app.test_client().get("/v1/me", headers=bearer(unknown))
            assert await error_code(response) == "invalid_token"
            assert any("api_keys" in str(entry.query) for entry in statements)
        finally:
            database.remove_query_logger(statements.append)


async def test_revoked_key_is_refused_by_its_owner(app: Quart) -> None:
    owner, _ = await logged_in_user(app)
    created = await new_key(owner)
    assert (await owner.delete(f"/v1/me/api-keys/{created['id']}")).status_code == 204
    response = await app.test_client().get("/v1/me", headers=bearer(created["key"]))
    assert await error_code(response) == "invalid_token"
    again = await owner.delete(f"/v1/me/api-keys/{created['id']}")
    assert await error_code(again, 404) == "not_found"


async def test_another_users_key_cannot_be_revoked(app: Quart) -> None:
    owner, _ = await logged_in_user(app)
    stranger, _ = await logged_in_user(app)
    created = await new_key(owner)
    response = await stranger.delete(f"/v1/me/api-keys/{created['id']}")
    assert await error_code(response, 404) == "not_found"
    assert (
        await app.test_client().get("/v1/me", headers=bearer(created["key"]))
    ).status_code == 200


async def test_use_is_recorded_as_last_used(app: Quart) -> None:
    owner, _ = await logged_in_user(app)
    created = await new_key(owner)
    assert (
        await app.test_client().get("/v1/me", headers=bearer(created["key"]))
    ).status_code == 200
    (entry,) = (await (await owner.get("/v1/me/api-keys")).get_json())["api_keys"]
    assert entry["last_used_at"] is not None


async def test_password_change_and_logout_everywhere_keep_keys(app: Quart) -> None:
    owner, _ = await logged_in_user(app)
    key = (await new_key(owner))["key"]
    body = {"current_password": PASSWORD, "new_password": "another long passphrase"}
    # An API key never counts as a recent login: it cannot change the password (S42).
    refused = await app.test_client().post("/v1/me/password", json=body, headers=bearer(key))
    assert await error_code(refused) == "reauthentication_required"
    assert (await owner.post("/v1/me/password", json=body)).status_code == 204
    assert (await app.test_client().get("/v1/me", headers=bearer(key))).status_code == 200
    everywhere = await app.test_client().post("/v1/me/logout-everywhere", headers=bearer(key))
    assert everywhere.status_code == 204
    assert (await app.test_client().get("/v1/me", headers=bearer(key))).status_code == 200


async def test_disabled_users_keys_are_refused(app: Quart) -> None:
    owner, email = await logged_in_user(app)
    key = (await new_key(owner))["key"]
    assert (await app.test_client().get("/v1/me", headers=bearer(key))).status_code == 200
    await services_of(app).admin.disable_user(email)
    response = await app.test_client().get("/v1/me", headers=bearer(key))
    assert await error_code(response) == "invalid_token"


@pytest.fixture(name="two_apps")
async def _two_apps(backing: Backing) -> AsyncIterator[tuple[Quart, Quart]]:
    settings = machine_settings(backing, api_key_cache_local_ttl_seconds=60)
    first = create_app(settings, extensions=[MachineProbe()])
    second = create_app(settings, extensions=[MachineProbe()])
    async with first.test_app(), second.test_app():
        for app in (first, second):
            await asyncio.wait_for(services_of(app).caches.ready.wait(), timeout=5)
        yield first, second


async def test_revoked_key_is_refused_on_another_instance_within_a_second(
    two_apps: tuple[Quart, Quart],
) -> None:
    # S43: revocation reaches every worker by pub/sub, as session revocation does.
    first, second = two_apps
    owner, _ = await logged_in_user(first)
    created = await new_key(owner)
    elsewhere = second.test_client()
    # The first use records last_used_at (and drops the cached copy); the second caches it.
    for _ in range(2):
        assert (await elsewhere.get("/v1/me", headers=bearer(created["key"]))).status_code == 200
    assert services_of(second).machine.api_keys.cache.local.get(created["id"]) is not None

    assert (await owner.delete(f"/v1/me/api-keys/{created['id']}")).status_code == 204

    await eventually_status(elsewhere, "/v1/me", 401, within=1.0, headers=bearer(created["key"]))
