"""Helpers for the token tests: grant, bearer headers, forging tokens with our own keys."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import jwt
from quart import Quart

from tests.support.http import PASSWORD, Client, register, services_of, unique_email


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def grant(client: Client, email: str, password: str = PASSWORD, **extra: Any) -> Any:
    return await client.post("/v1/tokens", json={"email": email, "password": password, **extra})


async def new_user_tokens(client: Client) -> tuple[str, dict[str, Any]]:
    """Register a fresh account and return its email and a password-grant answer."""
    email = unique_email()
    await register(client, email)
    response = await grant(client, email)
    assert response.status_code == 200, await response.get_data(as_text=True)
    return email, await response.get_json()


async def refresh(client: Client, token: str) -> Any:
    return await client.post("/v1/tokens/refresh", json={"refresh_token": token})


async def error_code(response: Any, status: int = 401) -> str:
    body = await response.get_data(as_text=True)
    assert response.status_code == status, body
    return str((await response.get_json())["error"]["code"])


def token_bytes(token: str) -> bytearray:
    """The bytes of a base64url token (a refresh token), to change one and write it back."""
    return bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def token_text(raw: bytes) -> str:
    """Write token bytes back as unpadded base64url text, as keystile issues them."""
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def forge(app: Quart, *, header: dict[str, Any] | None = None, **claims: Any) -> str:
    """Sign a token with the app's own current key; claims default to a valid token."""
    settings = services_of(app).settings
    key = services_of(app).key_ring.signing_key()
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": settings.tokens.issuer,
        "aud": settings.tokens.audience,
        "sub": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "scope": "account",
        "epoch": 0,
    }
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    headers = {"kid": key.kid, "typ": "at+jwt", **(header or {})}
    return jwt.encode(payload, key.private_key, algorithm=key.alg, headers=headers)  # type: ignore[arg-type]
