"""The OpenAPI document is exact: what it says an operation answers is what it answers.

A sample of operations is checked status by status here; schemathesis then checks every
operation against a live `keystile serve` with `--checks all` (responses conform to
the document, schema-valid requests are accepted or meaningfully refused, invalid ones
refused, no 5xx, auth not ignored, ...).
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.backing import Backing
from tests.support.http import Client
from tests.support.processes import ROOT, Server, start_server, wait_until_ready

ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}


@pytest.fixture(name="document")
async def _document(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return await response.get_json()  # type: ignore[no-any-return]


def _statuses(document: dict[str, Any], method: str, path: str) -> set[int]:
    return {int(status) for status in document["paths"][path][method]["responses"]}


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("post", "/v1/users", {202, 400, 413, 415, 422, 429, 431, 503}),
        ("post", "/v1/sessions", {201, 400, 401, 403, 413, 415, 422, 429, 431, 503}),
        ("get", "/v1/me", {200, 401, 403, 431, 503}),  # 403: a client token (user_required)
        ("delete", "/v1/sessions/current", {204, 401, 403, 431, 503}),
        ("delete", "/v1/sessions/{session_id}", {204, 401, 403, 404, 431, 503}),
        ("post", "/v1/tokens", {200, 400, 401, 403, 413, 415, 422, 429, 431, 503}),
        ("post", "/v1/tokens/revoke", {204, 400, 413, 415, 422, 431, 503}),
        ("get", "/.well-known/jwks.json", {200, 304, 431, 503}),
        # Rate limits and authentication checked inside the handler, not by a decorator.
        ("post", "/v1/password-resets", {202, 400, 413, 415, 422, 429, 431, 503}),
        ("post", "/v1/email-verifications", {202, 400, 401, 403, 413, 415, 422, 429, 431, 503}),
        ("post", "/v1/me/email", {202, 400, 401, 403, 413, 415, 422, 429, 431, 503}),
    ],
)
def test_operations_list_every_status_they_answer(
    document: dict[str, Any], method: str, path: str, statuses: set[int]
) -> None:
    assert _statuses(document, method, path) == statuses
    for status, response in document["paths"][path][method]["responses"].items():
        assert response["description"]
        if int(status) >= 400:  # every error answer has the one error shape
            content = response["content"]["application/json"]
            assert content["schema"] == ERROR_SCHEMA
            assert set(content["example"]["error"]) == {"code", "message"}


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def test_every_schema_reference_resolves_inside_the_document(document: dict[str, Any]) -> None:
    # A `$ref` that points nowhere breaks Swagger UI's rendering and generated clients.
    for reference in set(_references(document)):
        assert reference.startswith("#/"), reference
        node: Any = document
        for part in reference.removeprefix("#/").split("/"):
            assert isinstance(node, dict), reference
            assert part in node, reference
            node = node[part]


def test_error_answers_name_their_stable_codes(document: dict[str, Any]) -> None:
    responses = document["paths"]["/v1/me"]["get"]["responses"]
    for code in ("not_authenticated", "invalid_token", "token_expired", "token_revoked"):
        assert f"`{code}`" in responses["401"]["description"]
    assert "Retry-After" in responses["503"]["headers"]
    error = document["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]
    assert set(error["properties"]["error"]["required"]) == {"code", "message"}


def test_security_schemes_are_bearer_and_the_session_cookie(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT or API key",
        "description": schemes["bearerAuth"]["description"],
    }
    assert schemes["sessionCookie"]["in"] == "cookie"
    assert schemes["sessionCookie"]["name"] == "keystile_session"  # cookie_secure is off
    assert "csrf_failed" in schemes["sessionCookie"]["description"]
    paths = document["paths"]
    assert paths["/v1/me"]["get"]["security"] == [{"bearerAuth": []}, {"sessionCookie": []}]
    assert paths["/v1/sessions"]["get"]["security"] == [{"sessionCookie": []}]
    assert "security" not in paths["/v1/sessions"]["post"]  # logging in needs nothing


def test_request_constraints_say_what_is_accepted(document: dict[str, Any]) -> None:
    def body(path: str) -> dict[str, Any]:
        request = document["paths"][path]["post"]["requestBody"]
        assert request["required"] is True
        return request["content"]["application/json"]["schema"]  # type: ignore[no-any-return]

    register = body("/v1/users")["properties"]
    assert (register["password"]["minLength"], register["password"]["maxLength"]) == (8, 1024)
    assert register["email"]["pattern"]
    assert register["email"]["examples"] == ["ada@example.com"]
    login = body("/v1/sessions")["properties"]  # existing (also imported) passwords: any length
    assert (login["password"]["minLength"], login["password"]["maxLength"]) == (1, 1024)
    scope = body("/v1/tokens")["properties"]["scope"]["anyOf"][0]
    assert scope["pattern"] == "^ *(?:(?:account)(?: +(?:account))*)? *$"  # the granted scopes
    session_id = document["paths"]["/v1/sessions/{session_id}"]["delete"]["parameters"][0]
    assert session_id["schema"] == {"type": "string", "format": "uuid"}


def test_html_pages_and_operational_routes_are_not_in_the_document(
    document: dict[str, Any],
) -> None:
    paths = set(document["paths"])
    for page in ("/", "/login", "/register", "/logout", "/account", "/docs", "/static/{name}"):
        assert page not in paths
    assert not any(path.startswith("/account") for path in paths)
    assert not {"/healthz", "/readyz", "/metrics", "/openapi.json"} & paths
    assert all(path.startswith(("/v1/", "/.well-known/")) for path in paths)


@pytest.fixture(name="live", scope="module")
def _live(backing: Backing, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Roomy per-account limits: every generated login is for the few accounts of the
    # examples, and the run's own account logs in every two seconds.
    roomy = {
        f"rate_limit_{action}_per_account": "100000/minute"
        for action in ("login", "token", "refresh", "register", "password_change")
    }
    # POST /v1/me/reauthenticate sends the run's own account made-up passwords: the
    # account's login backoff must not lock the run out of logging in for its auth.
    roomy["login_backoff_account_free_failures"] = "100000"
    roomy["login_backoff_client_free_failures"] = "100000"
    server = start_server(backing, tmp_path_factory.mktemp("openapi"), workers=1, **roomy)
    try:
        wait_until_ready(server)
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_schemathesis_finds_no_failure_with_every_check(live: Server, tmp_path: Path) -> None:
    # Not the document's example password: the examples must not change this one's.
    email, password = f"schemathesis-{uuid.uuid4().hex}@example.com", uuid.uuid4().hex
    with httpx.Client(base_url=live.base, timeout=10) as http:
        body = {"email": email, "password": password}
        assert http.post("/v1/users", json=body).status_code == 202
        # The document's example account exists, so the examples log in for real.
        example = {"email": "ada@example.com", "password": "correct horse battery staple"}
        assert http.post("/v1/users", json=example).status_code == 202
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")},
        "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
        "KEYSTILE_ST_BASE": live.base,
        "KEYSTILE_ST_EMAIL": email,
        "KEYSTILE_ST_PASSWORD": password,
    }
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(ROOT / "tests" / "support" / "schemathesis.toml"),
            "run",
            f"{live.base}/openapi.json",
            "--checks",
            "all",
            "--generation-deterministic",  # the same cases every run: CI cannot flake
            "--no-color",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output + _refused_logins(live)
    operations = sum(
        len(methods) for methods in httpx.get(f"{live.base}/openapi.json").json()["paths"].values()
    )
    assert f"Selected: {operations}/{operations}" in output
    assert "failures" not in output.lower().split("summary")[-1], output


def test_the_error_code_page_lists_every_code_as_the_code_says() -> None:
    generator = runpy.run_path(str(ROOT / "scripts" / "error_codes.py"))
    assert (ROOT / "docs" / "errors.md").read_text() == generator["render"](), (
        "docs/errors.md is stale: run .venv/bin/python scripts/error_codes.py"
    )
    codes = {code for code, _, _ in generator["rows"]()}
    assert {"validation_failed", "password_too_long", "unsupported_media_type"} <= codes
    assert {"headers_too_large", "csrf_failed", "overloaded", "internal_error"} <= codes


def _refused_logins(server: Server) -> str:
    """The server's log lines of logins refused for load or limits (to explain a failure)."""
    lines = [
        f"{line['method']} {line['route']} {line['status']}"
        for line in server.log_lines()
        if line.get("logger") == "keystile.request"
        and line.get("route") in {"/v1/tokens", "/v1/sessions"}
        and line.get("status", 0) in {429, 503}
    ]
    return "\nrefused logins in the server log:\n" + "\n".join(lines[-20:])
