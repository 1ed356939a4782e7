"""The one place domain and HTTP errors become responses with stable codes (S24, S25).

A domain error's status is its class's `http_status` (keystile/errors.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from quart import Quart, Response, jsonify, request
from quart_schema import RequestSchemaValidationError
from quart_schema.validation import QuerystringValidationError, RequestHeadersValidationError
from werkzeug.exceptions import HTTPException

from keystile.errors import (
    InsufficientScope,
    InvalidToken,
    KeystileError,
    MfaRequired,
    ReauthenticationRequired,
)
from keystile.web.context import note_refused_limit

__all__ = [
    "HTTP_CODES",
    "error_response",
    "register_error_handlers",
    "status_for",
    "status_for_type",
]

_log = logging.getLogger(__name__)

HTTP_CODES = {
    400: ("malformed_request", "The request body could not be read."),
    401: ("not_authenticated", "Authentication is required."),
    403: ("forbidden", "This is not allowed."),
    404: ("not_found", "Nothing is here."),
    405: ("method_not_allowed", "This method is not allowed here."),
    411: ("length_required", "A Content-Length is required."),
    413: ("request_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the body as JSON (Content-Type: application/json)."),
    429: ("rate_limited", "Too many requests; retry later."),
    431: ("headers_too_large", "The request headers are too large."),
}


def error_response(
    status: int, code: str, message: str, *, fields: list[dict[str, str]] | None = None
) -> Response:
    """Return the standard error body: {"error": {"code": ..., "message": ...}}."""
    body: dict[str, object] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    response = jsonify({"error": body})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def status_for(error: KeystileError) -> int:
    """Return the HTTP status of a domain error (also used by the HTML pages)."""
    return status_for_type(type(error))


def status_for_type(error_type: type[KeystileError]) -> int:
    """Return the HTTP status of a kind of domain error (also for the OpenAPI document)."""
    return error_type.http_status


def _domain_error(error: KeystileError) -> Response:
    status = status_for(error)
    response = error_response(status, error.code, error.message)
    if isinstance(error, MfaRequired):
        # The second step's handle and choices sit beside the error (docs/mfa.md).
        response.set_data(
            json.dumps(
                {
                    "error": {"code": error.code, "message": error.message},
                    "mfa_token": error.mfa_token,
                    "factors": error.factors,
                }
            )
        )
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    note_refused_limit(error)
    if isinstance(error, InvalidToken | InsufficientScope):
        # RFC 6750 3: tell a bearer client what went wrong, in the header it reads.
        kind = "insufficient_scope" if isinstance(error, InsufficientScope) else "invalid_token"
        response.headers["WWW-Authenticate"] = f'Bearer error="{kind}"'
    elif isinstance(error, ReauthenticationRequired):
        # RFC 9470: step-up authentication; max_age says how recent it must be.
        response.headers["WWW-Authenticate"] = (
            f'Bearer error="insufficient_user_authentication", max_age={error.max_age}'
        )
    return response


# Messages a person can act on, by pydantic error type; the raw pydantic text (which
# quotes patterns and model names) is only the fallback.
_FIELD_MESSAGES = {
    "missing": "This field is required.",
    "extra_forbidden": "This field is not accepted here.",
    "string_type": "Must be a string.",
    "bool_type": "Must be true or false.",
    "bool_parsing": "Must be true or false.",
    "int_type": "Must be a whole number.",
    "int_parsing": "Must be a whole number.",
    "int_from_float": "Must be a whole number.",
    "string_too_short": "Must be at least {min_length} characters.",
    "string_too_long": "Must be at most {max_length} characters.",
    "greater_than_equal": "Must be at least {ge}.",
    "less_than_equal": "Must be at most {le}.",
    "string_pattern_mismatch": "Contains characters that are not allowed here.",
}
# A pattern mismatch on these fields means one thing a person can fix.
_PATTERN_MESSAGES = {
    "email": "Enter an email address like name@example.com.",
    "refresh_token": "This is not a refresh token issued by this service.",
    "scope": "Scopes are printable ASCII words separated by spaces.",
}
_WHERE = {"query": "The query string is not valid", "headers": "The request headers are not valid"}


def _field_message(item: Any) -> str:
    kind = str(item.get("type", ""))
    name = str(item.get("loc", ("",))[-1]) if item.get("loc") else ""
    if kind == "string_pattern_mismatch" and name in _PATTERN_MESSAGES:
        return _PATTERN_MESSAGES[name]
    if "password" in name:
        if kind == "string_pattern_mismatch":
            return "The password must not contain control characters."
        if kind in {"string_too_short", "string_too_long"}:
            return "The password " + _FIELD_MESSAGES[kind].format(**item["ctx"]).lower()
    template = _FIELD_MESSAGES.get(kind)
    if template is None:
        return str(item.get("msg", "Not valid."))
    try:
        return template.format(**(item.get("ctx") or {}))
    except (KeyError, IndexError):
        return str(item.get("msg", "Not valid."))


def _validation_error(error: RequestSchemaValidationError) -> Response:
    where = (
        "query"
        if isinstance(error, QuerystringValidationError)
        else "headers"
        if isinstance(error, RequestHeadersValidationError)
        else "body"
    )
    if where == "body" and not request.is_json:
        # quart-schema reads a non-JSON body as nothing; say what to send instead.
        return error_response(415, *HTTP_CODES[415])
    details = getattr(error.validation_error, "errors", None)
    if not callable(details):
        return error_response(400, *HTTP_CODES[400])
    fields: list[dict[str, str]] = []
    # Field locations and messages only: the rejected values are never echoed.
    for item in details(include_input=False, include_url=False):
        location = ".".join(str(part) for part in item.get("loc", ()))
        if not location:
            return error_response(422, "validation_failed", "Send a JSON object as the body.")
        fields.append({"field": location, "message": _field_message(item)})
    if where == "body":
        message = "The request body is not valid: " + _summary(fields)
    else:
        message = f"{_WHERE[where]}: " + _summary(fields)
    return error_response(422, "validation_failed", message, fields=fields)


def _summary(fields: list[dict[str, str]]) -> str:
    first = fields[0]
    more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
    return f"{first['field']}: {first['message']}{more}"


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    code, message = HTTP_CODES.get(status, (f"http_{status}", "The request failed."))
    response = error_response(status, code, message)
    if status == 405 and error.response is None:
        allowed = getattr(error, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


def _undecodable_body(_: UnicodeDecodeError) -> Response:
    # Quart decodes the body lazily, so invalid UTF-8 surfaces inside the handler.
    return error_response(400, *HTTP_CODES[400])


def _unexpected(error: Exception) -> Response:
    # Last resort: log the trace for operators; the client gets no detail at all.
    _log.error("unhandled error", exc_info=error)
    return error_response(500, "internal_error", "Something went wrong on our side.")


def register_error_handlers(app: Quart) -> None:
    """Install the handlers; call once from `create_app`."""
    app.register_error_handler(KeystileError, _domain_error)
    app.register_error_handler(RequestSchemaValidationError, _validation_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(UnicodeDecodeError, _undecodable_body)
    app.register_error_handler(Exception, _unexpected)
