"""One structured log line per request, and the X-Request-ID round trip (S18: no secrets)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest

from keystile.logs import (
    REQUEST_ID,
    ReadableTextFormatter,
    RedactingJsonFormatter,
    logging_config,
)
from tests.support.http import PASSWORD, Client, login, register, unique_email


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "keystile.request"]


async def test_a_sane_request_id_is_kept_and_echoed(client: Client) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "edge-4f2a:01"})
    assert response.headers["X-Request-ID"] == "edge-4f2a:01"


@pytest.mark.parametrize("incoming", ["x" * 129, "two words", "<script>", "id\u00e9", ""], ids=repr)
async def test_an_unsafe_or_missing_request_id_is_replaced(client: Client, incoming: str) -> None:
    headers = {"X-Request-ID": incoming} if incoming else {}
    response = await client.get("/healthz", headers=headers)
    generated = response.headers["X-Request-ID"]
    assert generated != incoming
    assert len(generated) == 32
    assert all(c in "0123456789abcdef" for c in generated)


async def test_each_request_logs_one_line_with_route_status_duration_and_user(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    caplog.set_level(logging.INFO, logger="keystile.request")
    caplog.clear()

    response = await client.get("/v1/me", headers={"X-Request-ID": "req-123"})
    user_id = (await response.get_json())["id"]

    (line,) = _request_lines(caplog)
    assert line.request_id == "req-123"  # type: ignore[attr-defined]
    assert line.method == "GET"  # type: ignore[attr-defined]
    assert line.route == "/v1/me"  # type: ignore[attr-defined]
    assert line.status == 200  # type: ignore[attr-defined]
    assert line.user_id == user_id  # type: ignore[attr-defined]
    assert 0 < line.duration_ms < 60_000  # type: ignore[attr-defined]


async def test_the_request_log_never_holds_passwords_cookies_or_credentials(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # S18: what a log line says about a request is its shape, never its secrets.
    caplog.set_level(logging.DEBUG)
    email = unique_email()
    await register(client, email)
    assert (await login(client, email)).status_code == 201
    await client.get(
        "/v1/me?token=query-secret-value",
        headers={"Authorization": "Bearer header-secret-value"},
    )
    cookie = next(iter(client.cookie_jar)).value  # type: ignore[attr-defined]
    formatter = RedactingJsonFormatter()
    output = "\n".join(formatter.format(record) for record in caplog.records)
    assert output
    for secret in (PASSWORD, cookie, "query-secret-value", "header-secret-value"):
        assert secret not in output
    assert email not in "\n".join(formatter.format(record) for record in _request_lines(caplog))


async def test_unmatched_routes_and_oversized_headers_are_logged_too(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keystile.request")
    await client.get("/no/such/place")
    await client.get("/healthz", headers={"X-Big": "x" * 20_000})
    statuses = [(line.route, line.status) for line in _request_lines(caplog)]  # type: ignore[attr-defined]
    assert statuses == [("<unmatched>", 404), ("<unmatched>", 431)]


def test_json_lines_redact_credential_named_fields_and_carry_the_request_id() -> None:
    config = logging_config("info", "json")
    assert config["formatters"]["default"]["()"] is RedactingJsonFormatter
    record = logging.LogRecord(
        "keystile.test", logging.INFO, __file__, 1, "hello %s", ("you",), None
    )
    record.password = "hunter2-hunter2"
    record.refresh_token = "rt-secret"
    record.user_id = "u-1"
    token = REQUEST_ID.set("rid-9")
    try:
        request_filter = config["filters"]["request_id"]["()"]()
        request_filter.filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(RedactingJsonFormatter().format(record))
    assert line["message"] == "hello you"
    assert line["level"] == "INFO"
    assert line["logger"] == "keystile.test"
    assert line["request_id"] == "rid-9"
    assert line["user_id"] == "u-1"
    assert line["password"] == "[redacted]"
    assert line["refresh_token"] == "[redacted]"
    assert "time" in line


async def test_the_text_format_gives_one_readable_line_per_request(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    assert logging_config("info", "text")["formatters"]["default"]["()"] is ReadableTextFormatter
    caplog.set_level(logging.INFO, logger="keystile.request")
    await client.get("/v1/me", headers={"X-Request-ID": "req-text-1"})
    (record,) = _request_lines(caplog)

    line = ReadableTextFormatter().format(record)

    assert "\n" not in line
    assert re.fullmatch(r"\S+ \S+ INFO GET /v1/me 401 \d+\.\dms rid=req-text-1 client=\S+", line), (
        line
    )


def test_the_text_format_shows_extras_as_key_value_and_redacts_credentials() -> None:
    record = logging.LogRecord("keystile.serve", logging.INFO, __file__, 1, "draining", (), None)
    record.delay_seconds = 5
    record.session_id = "s3cret-session"
    record.note = "two words"

    line = ReadableTextFormatter().format(record)

    assert line.endswith(
        'INFO keystile.serve: draining delay_seconds=5 session_id=[redacted] note="two words"'
    ), line
    assert "s3cret" not in line


def test_a_configured_process_writes_the_same_json_line_and_skips_caller_and_process() -> None:
    # configure_logging switches off what no format writes (caller location, process and
    # thread names); the line a worker writes keeps its fields and its redaction (S18).
    script = (
        "import logging; from keystile.logs import configure_logging; configure_logging();"
        "log = logging.getLogger('keystile.request');"
        "log.info('request', extra={'route': '/v1/me',"
        " 'status': 200, 'refresh_token': 'rt-secret', 'password_hash': 'kept'});"
        "record = log.makeRecord('x', logging.INFO, '(unknown file)', 0, 'm', (), None);"
        "print(record.process, record.processName, record.threadName)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    line = json.loads(done.stderr)
    assert line["level"] == "INFO"
    assert line["logger"] == "keystile.request"
    assert line["message"] == "request"
    assert (line["route"], line["status"]) == ("/v1/me", 200)
    assert line["refresh_token"] == "[redacted]"
    assert line["password_hash"] == "kept"
    assert "time" in line
    assert not {"process", "processName", "thread", "threadName", "funcName", "lineno"} & set(line)
    assert done.stdout.split() == ["None", "None", "None"]  # no getpid, no thread lookups
