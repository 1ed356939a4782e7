"""Every bad input gets a clear 4xx in the standard error shape; nothing is stored (S24, S25)."""

from __future__ import annotations

import pytest
from quart import Blueprint, Quart

from keystile.app import create_app
from keystile.settings import Settings
from tests.support.http import PASSWORD, Client, login, unique_email


async def _error(response: object, status: int) -> str:
    assert response.status_code == status, await response.get_data(as_text=True)  # type: ignore[attr-defined]
    body = await response.get_json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert response.headers["Cache-Control"] == "no-store"  # type: ignore[attr-defined]
    return str(body["error"]["code"])


async def _assert_not_stored(client: Client, email: str) -> None:
    assert (await login(client, email)).status_code == 401


async def test_malformed_json_is_400(client: Client) -> None:
    response = await client.post(
        "/v1/users", data=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    assert await _error(response, 400) == "malformed_request"


async def test_invalid_utf8_is_400_and_stores_nothing(client: Client) -> None:
    email = unique_email()
    body = b'{"email": "' + email.encode() + b'", "password": "\xff\xfe password"}'
    response = await client.post(
        "/v1/users", data=body, headers={"Content-Type": "application/json"}
    )
    assert await _error(response, 400) == "malformed_request"
    await _assert_not_stored(client, email)


async def test_wrong_types_are_422_naming_the_fields(client: Client) -> None:
    response = await client.post("/v1/users", json={"email": 42, "password": ["x"]})
    assert await _error(response, 422) == "validation_failed"
    fields = {item["field"] for item in (await response.get_json())["error"]["fields"]}
    assert fields == {"email", "password"}


async def test_non_json_body_is_a_4xx(client: Client) -> None:
    response = await client.post(
        "/v1/users", data="email=a", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code in {400, 415, 422}
    assert "error" in await response.get_json()


async def test_nul_byte_in_password_is_422_and_stores_nothing(client: Client) -> None:
    email = unique_email()
    response = await client.post("/v1/users", json={"email": email, "password": "abc\x00defghij"})
    assert await _error(response, 422) == "validation_failed"
    await _assert_not_stored(client, email)


async def test_nul_byte_in_email_is_422(client: Client) -> None:
    response = await client.post(
        "/v1/users", json={"email": "a\x00@example.com", "password": PASSWORD}
    )
    assert await _error(response, 422) == "validation_failed"


async def test_unknown_fields_are_422(client: Client) -> None:
    response = await client.post(
        "/v1/users", json={"email": unique_email(), "password": PASSWORD, "admin": True}
    )
    assert await _error(response, 422) == "validation_failed"


async def test_oversized_body_is_413(client: Client, settings: Settings) -> None:
    email = unique_email()
    padding = "x" * (settings.serving.max_body_bytes + 1)
    response = await client.post("/v1/users", json={"email": email, "password": padding})
    assert await _error(response, 413) == "request_too_large"
    await _assert_not_stored(client, email)


async def test_password_over_the_maximum_is_422_without_hashing(client: Client) -> None:
    # S1: over the maximum is a clear 422, never a slow hash (checked after NFKC).
    email = unique_email()
    response = await client.post("/v1/users", json={"email": email, "password": "p" * 1025})
    assert await _error(response, 422) == "weak_password"
    await _assert_not_stored(client, email)


async def test_password_of_maximum_length_is_accepted(client: Client) -> None:
    email = unique_email()
    response = await client.post("/v1/users", json={"email": email, "password": "p" * 1024})
    assert response.status_code == 202
    assert (await login(client, email, "p" * 1024)).status_code == 201


async def test_short_password_is_422(client: Client) -> None:
    response = await client.post("/v1/users", json={"email": unique_email(), "password": "short"})
    assert await _error(response, 422) == "weak_password"


async def test_unknown_route_is_404_json(client: Client) -> None:
    assert await _error(await client.get("/v1/nothing-here"), 404) == "not_found"


async def test_wrong_method_is_405_json(client: Client) -> None:
    response = await client.put("/v1/users", json={})
    assert await _error(response, 405) == "method_not_allowed"


async def test_unexpected_error_leaks_no_detail(settings: Settings) -> None:
    # S25: one last-resort handler; no trace, SQL or secret reaches the body.
    app: Quart = create_app(settings)
    broken = Blueprint("broken", __name__)

    @broken.get("/broken")
    async def _broken() -> str:
        raise RuntimeError("SELECT password_hash FROM users -- secret detail")

    app.register_blueprint(broken)
    async with app.test_app() as test_app:
        response = await test_app.test_client().get("/broken")
    assert await _error(response, 500) == "internal_error"
    text = await response.get_data(as_text=True)
    assert "SELECT" not in text
    assert "Traceback" not in text
    assert "secret" not in text


@pytest.mark.parametrize("email", ["no-at-sign", "two@@example.com", "sp ace@example.com", ""])
async def test_malformed_email_is_422(client: Client, email: str) -> None:
    response = await client.post("/v1/users", json={"email": email, "password": PASSWORD})
    assert await _error(response, 422) == "validation_failed"


async def test_over_long_headers_are_431(client: Client, settings: Settings) -> None:
    response = await client.get(
        "/healthz", headers={"X-Big": "x" * settings.serving.max_header_bytes}
    )
    assert await _error(response, 431) == "headers_too_large"
