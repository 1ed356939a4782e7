"""Helpers for the machine-access tests: scoped probe routes, admins, API keys, clients."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from quart import Blueprint, Quart
from quart.typing import ResponseReturnValue

from keystile.app import create_app
from keystile.bootstrap import Services
from keystile.settings import Settings
from keystile.web.auth import get_principal, requires_auth, requires_role
from tests.support.backing import Backing, make_settings
from tests.support.http import Client, login, register, services_of, unique_email
from tests.support.tokens import bearer

blueprint = Blueprint("machine_probe", __name__)

SCOPES = ["account", "reports"]


@blueprint.get("/probe/reports")
@requires_auth(scopes=["reports"], clients=True)
async def reports() -> ResponseReturnValue:
    principal = get_principal()
    return {
        "via": principal.via,
        "client_id": None if principal.client_id is None else str(principal.client_id),
    }


@blueprint.get("/probe/user-reports")
@requires_auth(scopes=["reports"])
async def user_reports() -> ResponseReturnValue:
    return {"user": str(get_principal().user_id)}


@blueprint.get("/probe/account-and-reports")
@requires_auth(scopes=["account", "reports"])
async def account_and_reports() -> ResponseReturnValue:
    return {"user": str(get_principal().user_id)}


@blueprint.get("/probe/editor")
@requires_auth()
@requires_role("editor")
async def editor() -> ResponseReturnValue:
    return {"editor": True}


class MachineProbe:
    """A test extension serving the routes above."""

    name = "machine-probe"

    def blueprints(self) -> Sequence[Blueprint]:
        return (blueprint,)

    @asynccontextmanager
    async def build(self, core: Services) -> AsyncIterator[object]:
        yield object()


def machine_settings(backing: Backing, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"token_scopes": SCOPES, "extra_roles": ["editor"]}
    values.update(overrides)
    return make_settings(backing, **values)


@asynccontextmanager
async def machine_app(settings: Settings) -> AsyncIterator[Quart]:
    app = create_app(settings, extensions=[MachineProbe()])
    async with app.test_app():
        yield app


async def new_user(client: Client) -> str:
    email = unique_email()
    await register(client, email)
    return email


async def logged_in_user(app: Quart) -> tuple[Client, str]:
    """Return a test client with a fresh user's cookie session, and the user's email."""
    client = app.test_client()
    email = await new_user(client)
    assert (await login(client, email)).status_code == 201
    return client, email


async def logged_in_admin(app: Quart) -> tuple[Client, str]:
    """Return a test client logged in (just now) as a fresh admin, and its email."""
    client = app.test_client()
    email = await new_user(client)
    await services_of(app).machine.roles.grant(email, "admin")
    assert (await login(client, email)).status_code == 201
    return client, email


async def create_key(
    client: Client,
    scopes: list[str] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    body = {"name": "ci", "scopes": scopes or ["account"], "expires_in_days": 30, **extra}
    return await client.post("/v1/me/api-keys", json=body, headers=headers or {})


async def new_key(client: Client, scopes: list[str] | None = None) -> dict[str, Any]:
    response = await create_key(client, scopes)
    assert response.status_code == 201, await response.get_data(as_text=True)
    return await response.get_json()  # type: ignore[no-any-return]


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def client_token(client: Client, client_id: str, secret: str, **form: str) -> Any:
    return await client.post(
        "/v1/oauth/token",
        form={"grant_type": "client_credentials", **form},
        headers=basic(client_id, secret),
    )


__all__ = [
    "SCOPES",
    "MachineProbe",
    "basic",
    "bearer",
    "client_token",
    "create_key",
    "logged_in_admin",
    "logged_in_user",
    "machine_app",
    "machine_settings",
    "new_key",
    "new_user",
    "services_of",
]
