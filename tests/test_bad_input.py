"""Every bad input gets a clear 4xx in the standard error shape; nothing is stored (S24, S25)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field
from quart import Blueprint, Quart
from quart_schema import validate_querystring

from keystile.app import create_app
from keystile.settings import Settings
from tests.support.backing import Backing, make_settings
from tests.support.http import PASSWORD, Client, login, register, unique_email


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


@pytest.mark.parametrize("body", [b"grant_type=%FF&client_id=x", b"grant_type=\xff&client_id=x"])
async def test_invalid_utf8_in_the_token_endpoints_form_is_400(client: Client, body: bytes) -> None:
    # S24: the API's one form-encoded endpoint refuses it too, in its RFC 6749 5.2 shape.
    response = await client.post(
        "/v1/oauth/token",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    answer = await response.get_json()
    assert answer["error"] == "invalid_request"
    assert "not valid UTF-8" in answer["error_description"]


async def test_wrong_types_are_422_naming_the_fields(client: Client) -> None:
    response = await client.post("/v1/users", json={"email": 42, "password": ["x"]})
    assert await _error(response, 422) == "validation_failed"
    fields = {item["field"] for item in (await response.get_json())["error"]["fields"]}
    assert fields == {"email", "password"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_that_is_not_json_is_told_to_send_json(
    client: Client, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = await client.post("/v1/tokens", data="email=a&password=b", headers=headers)
    assert await _error(response, 415) == "unsupported_media_type"
    message = (await response.get_json())["error"]["message"]
    assert message == "Send the body as JSON (Content-Type: application/json)."


async def test_a_json_body_that_is_not_an_object_is_told_to_send_one(client: Client) -> None:
    response = await client.post("/v1/tokens", json=["not", "an", "object"])
    assert await _error(response, 422) == "validation_failed"
    assert (await response.get_json())["error"]["message"] == "Send a JSON object as the body."


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
    assert await _error(response, 422) == "validation_failed"
    assert (await response.get_json())["error"]["fields"] == [
        {"field": "password", "message": "The password must be at most 1024 characters."}
    ]
    await _assert_not_stored(client, email)


@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/tokens"])
async def test_a_2kb_password_at_login_is_too_long_not_weak(client: Client, path: str) -> None:
    # S1: refused before any hash; S6: the same for every email, known or not.
    response = await client.post(path, json={"email": unique_email(), "password": "p" * 2048})
    assert await _error(response, 422) == "validation_failed"
    error = (await response.get_json())["error"]
    assert error["fields"] == [
        {"field": "password", "message": "The password must be at most 1024 characters."}
    ]
    assert "weak" not in str(error)
    assert "policy" not in str(error)


async def test_a_login_password_over_the_configured_maximum_is_password_too_long(
    backing: Backing,
) -> None:
    # S1: the configured maximum is judged after NFKC, in the service, before any hash.
    app = create_app(make_settings(backing, password_max_length=64))
    async with app.test_app() as test_app:
        response = await login(test_app.test_client(), unique_email(), "p" * 65)
    assert await _error(response, 422) == "password_too_long"
    assert (await response.get_json())["error"]["message"] == (
        "The password must be at most 64 characters."
    )


async def test_password_of_maximum_length_is_accepted(client: Client) -> None:
    email = unique_email()
    response = await client.post("/v1/users", json={"email": email, "password": "p" * 1024})
    assert response.status_code == 202
    assert (await login(client, email, "p" * 1024)).status_code == 201


async def test_short_password_is_422(client: Client) -> None:
    response = await client.post("/v1/users", json={"email": unique_email(), "password": "short"})
    assert await _error(response, 422) == "validation_failed"
    assert (await response.get_json())["error"]["fields"] == [
        {"field": "password", "message": "The password must be at least 8 characters."}
    ]


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
    error = (await response.get_json())["error"]
    # A person reads it: no regular expression, no pydantic wording.
    assert error["fields"][0]["field"] == "email"
    assert error["fields"][0]["message"] in {
        "Enter an email address like name@example.com.",
        "Must be at least 3 characters.",
    }
    assert "^" not in str(error)
    assert "pattern" not in str(error)


async def test_over_long_headers_are_431(client: Client, settings: Settings) -> None:
    response = await client.get(
        "/healthz", headers={"X-Big": "x" * settings.serving.max_header_bytes}
    )
    assert await _error(response, 431) == "headers_too_large"


class _PageQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=100)


async def test_a_bad_query_parameter_is_named_as_a_query_parameter(settings: Settings) -> None:
    app: Quart = create_app(settings)
    listing = Blueprint("listing", __name__)

    @listing.get("/v1/things")
    @validate_querystring(_PageQuery)
    async def _things(query_args: _PageQuery) -> dict[str, int]:
        return {"limit": query_args.limit}

    app.register_blueprint(listing)
    async with app.test_app() as test_app:
        response = await test_app.test_client().get("/v1/things?limit=abc")
    assert await _error(response, 422) == "validation_failed"
    error = (await response.get_json())["error"]
    assert error["message"] == "The query string is not valid: limit: Must be a whole number."
    assert error["fields"] == [{"field": "limit", "message": "Must be a whole number."}]


async def test_no_content_answers_carry_no_content_type(client: Client) -> None:
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    # The raw ASGI answer: the test client's Response would add text/html by itself.
    async with client.request("/v1/sessions/current", method="DELETE") as connection:
        await connection.send_complete()
        body = await connection.receive()
    assert connection.status_code == 204
    assert "Content-Type" not in connection.headers
    assert body == b""
