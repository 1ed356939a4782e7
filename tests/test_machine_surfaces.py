"""Machine access on the other surfaces: the account page, the CLI, OpenAPI (S43-S45)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from quart import Quart

from tests.machine_support import bearer, logged_in_user, machine_app, machine_settings
from tests.support.backing import Backing
from tests.support.http import unique_email
from tests.test_cli import _run, client_list_pages


@pytest.fixture(name="app")
async def _app(backing: Backing) -> AsyncIterator[Quart]:
    async with machine_app(machine_settings(backing)) as app:
        yield app


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match is not None
    return match.group(1)


async def test_account_page_creates_shows_once_and_revokes_api_keys(app: Quart) -> None:
    browser, _ = await logged_in_user(app)
    page = await (await browser.get("/account")).get_data(as_text=True)
    assert "API keys" in page
    assert "You have no API keys." in page
    created = await browser.post(
        "/account/api-keys",
        form={
            "csrf_token": _csrf(page),
            "key_name": "backup script",
            "key_scopes": "reports",
            "key_expires_in_days": "30",
        },
    )
    assert created.status_code == 201
    html = await created.get_data(as_text=True)
    key = re.search(r'id="new-api-key">(ks_pat_[0-9A-Za-z_]+)<', html)
    assert key is not None
    assert created.headers["Cache-Control"] == "no-store"
    probe = await app.test_client().get("/probe/reports", headers=bearer(key.group(1)))
    assert probe.status_code == 200

    listing = await (await browser.get("/account")).get_data(as_text=True)
    assert "backup script" in listing
    assert key.group(1) not in listing
    key_id = key.group(1).split("_")[2]
    revoked = await browser.post(
        f"/account/api-keys/{key_id}/revoke", form={"csrf_token": _csrf(listing)}
    )
    assert revoked.status_code == 303
    assert (await app.test_client().get("/v1/me", headers=bearer(key.group(1)))).status_code == 401


async def test_account_page_key_form_needs_a_csrf_token_and_valid_fields(app: Quart) -> None:
    browser, _ = await logged_in_user(app)
    forged = await browser.post(
        "/account/api-keys",
        form={"csrf_token": "f" * 64, "key_name": "x", "key_scopes": "account"},
    )
    assert forged.status_code == 403
    page = await (await browser.get("/account")).get_data(as_text=True)
    invalid = await browser.post(
        "/account/api-keys",
        form={"csrf_token": _csrf(page), "key_name": "", "key_expires_in_days": "9999"},
    )
    assert invalid.status_code == 422
    html = await invalid.get_data(as_text=True)
    assert "Name the key" in html
    assert "Choose at least one scope." in html


async def test_openapi_documents_scopes_and_roles_of_every_machine_endpoint(app: Quart) -> None:
    spec = await (await app.test_client().get("/openapi.json")).get_json()
    schemes = spec["components"]["securitySchemes"]
    assert {"bearerAuth", "sessionCookie", "clientBasic", "clientCredentials"} <= set(schemes)
    paths = spec["paths"]
    for path, operations in paths.items():
        if not path.startswith(("/v1/me/api-keys", "/v1/admin", "/v1/oauth")):
            continue
        for method, operation in operations.items():
            assert operation.get("security"), f"{method} {path} documents no security"
            if path.startswith("/v1/admin"):
                assert {"bearerAuth": ["role:admin"]} in operation["security"], path
    reports = paths["/probe/reports"]["get"]["security"]
    assert {"bearerAuth": ["reports"]} in reports
    token = paths["/v1/oauth/token"]["post"]
    assert "application/x-www-form-urlencoded" in token["requestBody"]["content"]


def test_cli_grants_roles_and_manages_clients(backing: Backing) -> None:
    email = unique_email()
    created = _run(
        backing, "user", "create", email, "--password-stdin", stdin="a long passphrase\n"
    )
    assert created.returncode == 0, created.stderr
    granted = _run(backing, "user", "grant-role", email, "admin")
    assert granted.returncode == 0, granted.stderr
    assert "admin" in granted.stdout
    unknown = _run(backing, "user", "grant-role", email, "root")
    assert unknown.returncode == 2
    assert "Unknown role" in unknown.stderr

    client = _run(backing, "client", "create", "billing", "--scope", "account")
    assert client.returncode == 0, client.stderr
    client_id = re.search(r"client_id=(\S+)", client.stdout)
    secret = re.search(r"client_secret=(ks_cs_\S+)", client.stdout)
    assert client_id is not None
    assert secret is not None
    listed = "".join(page.stdout for page in client_list_pages(backing))
    assert client_id.group(1) in listed
    assert secret.group(1) not in listed
    deleted = _run(backing, "client", "delete", client_id.group(1))
    assert deleted.returncode == 0, deleted.stderr
    assert client_id.group(1) not in "".join(page.stdout for page in client_list_pages(backing))

    # With a second admin, taking the role from the first works (the last-admin rule
    # itself is tested on a database of its own, since "last" is deployment-wide).
    second = unique_email()
    assert (
        _run(
            backing, "user", "create", second, "--password-stdin", stdin="a long passphrase\n"
        ).returncode
        == 0
    )
    assert _run(backing, "user", "grant-role", second, "admin").returncode == 0
    revoked = _run(backing, "user", "revoke-role", email, "admin")
    assert revoked.returncode == 0, revoked.stderr
    assert "roles: -" in revoked.stdout
