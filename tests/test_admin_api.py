"""The admin API: admin role and recent authentication, audit, paging, last admin (S45)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from quart import Quart

from keystile.runtime import migrate
from keystile.services.paging import encode_cursor
from keystile.settings import Settings
from tests.machine_support import (
    bearer,
    logged_in_admin,
    logged_in_user,
    machine_app,
    machine_settings,
    new_key,
    new_user,
    services_of,
)
from tests.support.backing import Backing
from tests.support.http import unique_email
from tests.support.tokens import error_code, forge, grant, refresh

SOME_ID = "00000000-0000-4000-8000-000000000000"
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/admin/users", None),
    ("GET", f"/v1/admin/users/{SOME_ID}", None),
    ("POST", f"/v1/admin/users/{SOME_ID}/disable", None),
    ("POST", f"/v1/admin/users/{SOME_ID}/enable", None),
    ("POST", f"/v1/admin/users/{SOME_ID}/logout", None),
    ("POST", f"/v1/admin/users/{SOME_ID}/reset-factors", None),
    ("PUT", f"/v1/admin/users/{SOME_ID}/roles", {"roles": []}),
    ("GET", "/v1/admin/clients", None),
    ("POST", "/v1/admin/clients", {"name": "x", "scopes": ["account"]}),
    ("DELETE", f"/v1/admin/clients/{SOME_ID}", None),
]


@pytest.fixture(name="app")
async def _app(backing: Backing) -> AsyncIterator[Quart]:
    async with machine_app(machine_settings(backing)) as app:
        yield app


async def _call(client: Any, method: str, path: str, body: Any, **kwargs: Any) -> Any:
    return await client.open(path, method=method, json=body, **kwargs)


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_admin_endpoints_refuse_anonymous_and_non_admins(
    app: Quart, method: str, path: str, body: Any
) -> None:
    # S45: 401 without credentials, 403 for a user without the admin role.
    anonymous = await _call(app.test_client(), method, path, body)
    assert await error_code(anonymous, 401) == "not_authenticated"
    user, _ = await logged_in_user(app)
    refused = await _call(user, method, path, body)
    assert await error_code(refused, 403) == "role_required"


async def test_admin_needs_a_recent_password_authentication(app: Quart) -> None:
    # S45: an old login, an API key or a client token is not enough, even for an admin.
    admin, email = await logged_in_admin(app)
    assert (await admin.get("/v1/admin/users?limit=1")).status_code == 200
    user = await services_of(app).users.select_user_by_email(email)
    assert user is not None
    stale = forge(app, sub=str(user.id), epoch=user.token_epoch, auth_time=int(time.time()) - 3600)
    response = await app.test_client().get("/v1/admin/users", headers=bearer(stale))
    assert await error_code(response, 401) == "reauthentication_required"
    assert "insufficient_user_authentication" in response.headers["WWW-Authenticate"]
    assert "max_age=600" in response.headers["WWW-Authenticate"]
    key = (await new_key(admin))["key"]
    response = await app.test_client().get("/v1/admin/users", headers=bearer(key))
    assert await error_code(response, 401) == "reauthentication_required"
    fresh = (await (await grant(app.test_client(), email)).get_json())["access_token"]
    assert (
        await app.test_client().get("/v1/admin/users", headers=bearer(fresh))
    ).status_code == 200


async def test_removed_admin_role_stops_working_at_once(app: Quart) -> None:
    admin, email = await logged_in_admin(app)
    other_admin, _ = await logged_in_admin(app)
    assert (await admin.get("/v1/admin/users?limit=1")).status_code == 200
    user = await services_of(app).users.select_user_by_email(email)
    assert user is not None
    demoted = await other_admin.put(f"/v1/admin/users/{user.id}/roles", json={"roles": []})
    assert demoted.status_code == 200
    assert await error_code(await admin.get("/v1/admin/users"), 403) == "role_required"


async def test_admin_actions_are_audited_with_the_admin(app: Quart) -> None:
    # S45: every change names the admin who made it.
    admin, admin_email = await logged_in_admin(app)
    target, target_email = await logged_in_user(app)
    services = services_of(app)
    admin_user = await services.users.select_user_by_email(admin_email)
    target_user = await services.users.select_user_by_email(target_email)
    assert admin_user is not None
    assert target_user is not None
    base = f"/v1/admin/users/{target_user.id}"
    roles = await admin.put(f"{base}/roles", json={"roles": ["editor"]})
    assert roles.status_code == 200
    assert (await roles.get_json())["roles"] == ["editor"]
    assert (await admin.post(f"{base}/logout")).status_code == 204
    assert (await target.get("/v1/me")).status_code == 401
    assert (await admin.post(f"{base}/disable")).status_code == 204
    assert (await admin.post(f"{base}/enable")).status_code == 204
    detail = await (await admin.get(base)).get_json()
    assert detail["email"] == target_email
    assert detail["disabled_at"] is None
    kinds = {event["kind"]: event["detail"] for event in detail["recent_events"]}
    for kind in ("roles_changed", "admin_logout", "user_disabled", "user_enabled"):
        assert kinds[kind]["admin_id"] == str(admin_user.id), kind


async def test_disable_ends_api_keys_and_enable_lets_the_user_log_in(app: Quart) -> None:
    admin, _ = await logged_in_admin(app)
    owner, email = await logged_in_user(app)
    key = (await new_key(owner))["key"]
    user = await services_of(app).users.select_user_by_email(email)
    assert user is not None
    assert (await admin.post(f"/v1/admin/users/{user.id}/disable")).status_code == 204
    assert await error_code(await app.test_client().get("/v1/me", headers=bearer(key))) == (
        "invalid_token"
    )
    assert (await admin.post(f"/v1/admin/users/{user.id}/enable")).status_code == 204
    assert (await grant(app.test_client(), email)).status_code == 200
    assert (await app.test_client().get("/v1/me", headers=bearer(key))).status_code == 401


@pytest.mark.parametrize("via", ["admin_api", "cli"])
async def test_sessions_and_token_families_ended_by_disabling_stay_ended_after_enable(
    app: Quart, via: str
) -> None:
    # S10: disabling ends every session and token family, not only while it lasts.
    admin, _ = await logged_in_admin(app)
    owner, email = await logged_in_user(app)
    tokens = await (await grant(app.test_client(), email)).get_json()
    user = await services_of(app).users.select_user_by_email(email)
    assert user is not None
    if via == "cli":  # `keystile user disable` (UserAdminService)
        await services_of(app).admin.disable_user(email)
    else:
        assert (await admin.post(f"/v1/admin/users/{user.id}/disable")).status_code == 204
    assert (await admin.post(f"/v1/admin/users/{user.id}/enable")).status_code == 204

    assert (await owner.get("/v1/me")).status_code == 401
    assert (await refresh(app.test_client(), tokens["refresh_token"])).status_code == 401
    access = bearer(tokens["access_token"])
    assert (await app.test_client().get("/v1/me", headers=access)).status_code == 401
    assert (await grant(app.test_client(), email)).status_code == 200


async def test_unknown_roles_are_refused(app: Quart) -> None:
    admin, _ = await logged_in_admin(app)
    _, email = await logged_in_user(app)
    user = await services_of(app).users.select_user_by_email(email)
    assert user is not None
    response = await admin.put(f"/v1/admin/users/{user.id}/roles", json={"roles": ["root"]})
    assert await error_code(response, 422) == "invalid_input"


async def test_role_guard_checks_the_live_role(app: Quart) -> None:
    user, email = await logged_in_user(app)
    assert await error_code(await user.get("/probe/editor"), 403) == "role_required"
    await services_of(app).machine.roles.grant(email, "editor")
    assert (await user.get("/probe/editor")).status_code == 200


async def test_user_listing_pages_stably_while_users_are_added(app: Quart) -> None:
    admin, _ = await logged_in_admin(app)
    users = services_of(app).users
    prefix = f"page-{uuid.uuid4().hex[:12]}-"
    first = [f"{prefix}{i}@example.com" for i in range(5)]
    for email in first:
        assert await users.insert_user(email, "x") is not None
    seen: list[str] = []
    cursor = None
    added = 0
    while True:
        query = f"/v1/admin/users?email_prefix={prefix.upper()}&limit=2"
        page = await (await admin.get(query + (f"&cursor={cursor}" if cursor else ""))).get_json()
        seen += [item["email"] for item in page["items"]]
        if added < 3:  # users created while paging land after everyone already there
            await users.insert_user(f"{prefix}late{added}@example.com", "x")
            added += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen[:5] == first
    assert len(seen) == len(set(seen)) == 8


async def test_user_listing_filters_by_state_and_role(app: Quart) -> None:
    admin, admin_email = await logged_in_admin(app)
    prefix = admin_email.split("@")[0]
    admins = await (await admin.get(f"/v1/admin/users?email_prefix={prefix}&role=admin")).get_json()
    assert [item["email"] for item in admins["items"]] == [admin_email]
    disabled = await (
        await admin.get(f"/v1/admin/users?email_prefix={prefix}&state=disabled")
    ).get_json()
    assert disabled["items"] == []
    bad = await admin.get("/v1/admin/users?cursor=not-a-cursor")
    assert await error_code(bad, 422) == "invalid_input"


async def test_admin_registers_and_deletes_clients(app: Quart) -> None:
    admin, _ = await logged_in_admin(app)
    created = await admin.post(
        "/v1/admin/clients", json={"name": "billing", "scopes": ["reports"], "audience": "billing"}
    )
    assert created.status_code == 201
    body = await created.get_json()
    assert body["client_secret"].startswith("ks_cs_")
    listed = await _every_client(admin)
    assert body["client_id"] in [client["client_id"] for client in listed]
    assert "client_secret" not in str(listed)
    assert (await admin.delete(f"/v1/admin/clients/{body['client_id']}")).status_code == 204
    assert (await admin.delete(f"/v1/admin/clients/{body['client_id']}")).status_code == 404


async def _every_client(admin: Any) -> list[dict[str, Any]]:
    """Every client the admin API lists, page by page (other tests register clients too)."""
    listed: list[dict[str, Any]] = []
    query = "/v1/admin/clients"
    while True:
        response = await admin.get(query)
        assert response.status_code == 200
        page = await response.get_json()
        listed += page["clients"]
        if page["next_cursor"] is None:
            return listed
        query = f"/v1/admin/clients?cursor={page['next_cursor']}"


async def test_client_listing_pages_in_creation_order_while_clients_are_added(app: Quart) -> None:
    admin, _ = await logged_in_admin(app)
    clients = services_of(app).machine.clients
    prefix = f"page-{uuid.uuid4().hex[:12]}-"
    marker = (await clients.create(f"{prefix}marker", ["account"])).record
    first = [f"{prefix}{i}" for i in range(5)]
    for name in first:
        await clients.create(name, ["account"])
    late = [f"{prefix}late{i}" for i in range(3)]
    seen: list[str] = []
    # Other tests register clients in the same database: start where this test's begin.
    cursor: str | None = encode_cursor(marker.created_at, marker.id)
    added = 0
    while cursor is not None:
        response = await admin.get(f"/v1/admin/clients?limit=2&cursor={cursor}")
        assert response.status_code == 200
        page = await response.get_json()
        assert len(page["clients"]) <= 2
        seen += [item["name"] for item in page["clients"] if item["name"].startswith(prefix)]
        if added < len(late):  # clients registered while paging come after the others
            await clients.create(late[added], ["account"])
            added += 1
        cursor = page["next_cursor"]
    assert seen == first + late


async def test_client_listing_refuses_a_cursor_it_did_not_return(app: Quart) -> None:
    admin, _ = await logged_in_admin(app)
    bad = await admin.get("/v1/admin/clients?cursor=not-a-cursor")
    assert await error_code(bad, 422) == "invalid_input"
    for limit in (0, 101):
        refused = await admin.get(f"/v1/admin/clients?limit={limit}")
        assert await error_code(refused, 422) == "validation_failed"
    assert (await admin.get("/v1/admin/clients?limit=100")).status_code == 200


@pytest.fixture(name="own_database")
async def _own_database(backing: Backing) -> AsyncIterator[Settings]:
    """Settings on a database of its own: "the last admin" is global to a deployment."""
    name = f"keystile_admins_{uuid.uuid4().hex[:12]}"
    server = await asyncpg.connect(backing.database_url)
    try:
        await server.execute(f'CREATE DATABASE "{name}"')
    finally:
        await server.close()
    url = urlunsplit(urlsplit(backing.database_url)._replace(path=f"/{name}"))
    settings = machine_settings(backing, database_url=url)
    await asyncio.to_thread(migrate, settings)
    try:
        yield settings
    finally:
        server = await asyncpg.connect(backing.database_url)
        try:
            await server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await server.close()


async def test_the_last_admin_cannot_be_removed(own_database: Settings) -> None:
    # S45: neither by taking the role nor by disabling; with a second admin, both can.
    async with machine_app(own_database) as app:
        admin, email = await logged_in_admin(app)
        await new_user(app.test_client())  # an active user who is no admin does not count
        me = await services_of(app).users.select_user_by_email(email)
        assert me is not None
        base = f"/v1/admin/users/{me.id}"
        response = await admin.put(f"{base}/roles", json={"roles": []})
        assert await error_code(response, 409) == "last_admin"
        assert await error_code(await admin.post(f"{base}/disable"), 409) == "last_admin"

        other, other_email = await logged_in_admin(app)
        them = await services_of(app).users.select_user_by_email(other_email)
        assert them is not None
        # Both remove each other at once: exactly one succeeds; the other is refused,
        # as the last admin (409) or as no longer an admin (403), whichever came first.
        answers = await asyncio.gather(
            admin.put(f"/v1/admin/users/{them.id}/roles", json={"roles": []}),
            other.put(f"{base}/roles", json={"roles": []}),
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses in ([200, 403], [200, 409])
        admins = await services_of(app).database.fetchval(
            "SELECT count(*) FROM users WHERE roles @> ARRAY['admin']"
        )
        assert admins == 1


async def test_grant_role_from_the_cli_service_refuses_unknown_accounts(app: Quart) -> None:
    from keystile.errors import NotFound

    with pytest.raises(NotFound):
        await services_of(app).machine.roles.grant(unique_email(), "admin")
