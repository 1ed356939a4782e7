"""The one place domain and HTTP errors become responses with stable codes (S24, S25)."""

from __future__ import annotations

import logging

from quart import Quart, Response, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from keystile.errors import (
    AuthError,
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InsufficientScope,
    InvalidInput,
    InvalidLinkToken,
    InvalidToken,
    KeystileError,
    NotFound,
    Overloaded,
    RateLimited,
    ReauthenticationRequired,
)
from keystile.web.rate_limits import note_refused_limit

__all__ = ["error_response", "register_error_handlers", "status_for"]

_log = logging.getLogger(__name__)

# Checked in order: the first class an error is an instance of decides its status.
_STATUS: tuple[tuple[type[KeystileError], int], ...] = (
    (InvalidInput, 422),
    (InvalidLinkToken, 400),
    (AuthError, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (RateLimited, 429),
    (Overloaded, 503),
    (DependencyUnavailable, 503),
)

_HTTP_CODES = {
    400: ("malformed_request", "The request body could not be read."),
    401: ("not_authenticated", "Authentication is required."),
    403: ("forbidden", "This is not allowed."),
    404: ("not_found", "Nothing is here."),
    405: ("method_not_allowed", "This method is not allowed here."),
    411: ("length_required", "A Content-Length is required."),
    413: ("request_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the body as application/json."),
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
    return next((status for cls, status in _STATUS if isinstance(error, cls)), 400)


def _domain_error(error: KeystileError) -> Response:
    status = status_for(error)
    response = error_response(status, error.code, error.message)
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


def _validation_error(error: RequestSchemaValidationError) -> Response:
    fields: list[dict[str, str]] = []
    details = getattr(error.validation_error, "errors", None)
    if callable(details):
        # Field locations and messages only: the rejected values are never echoed.
        for item in details(include_input=False, include_url=False):
            location = ".".join(str(part) for part in item.get("loc", ())) or "body"
            fields.append({"field": location, "message": str(item.get("msg", "invalid"))})
        return error_response(
            422, "validation_failed", "The request body is not valid.", fields=fields
        )
    return error_response(400, *_HTTP_CODES[400])


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    code, message = _HTTP_CODES.get(status, (f"http_{status}", "The request failed."))
    response = error_response(status, code, message)
    if status == 405 and error.response is None:
        allowed = getattr(error, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


def _undecodable_body(_: UnicodeDecodeError) -> Response:
    # Quart decodes the body lazily, so invalid UTF-8 surfaces inside the handler.
    return error_response(400, *_HTTP_CODES[400])


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
