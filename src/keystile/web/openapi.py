"""The OpenAPI document at /openapi.json: every status an operation answers, exactly.

quart-schema builds the operations from the routes and their pydantic models. This
module adds what it cannot see: the statuses each operation can answer (inferred
from the decorators a handler carries, plus what a handler declares with
`responds` and `may_fail`), the one error schema every error answer shares, the
security schemes (bearer token; session cookie, whose state changes must come from
the same origin), and UUID path parameters. HTML pages are hidden from it (`hide`).

A client generated from the document (openapi-generator) knows every answer, and
schemathesis checks the document against a live server (tests/test_openapi.py).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from quart_schema import OpenAPIProvider
from quart_schema.validation import (
    QUART_SCHEMA_QUERYSTRING_ATTRIBUTE,
    QUART_SCHEMA_REQUEST_ATTRIBUTE,
)
from werkzeug.routing import BaseConverter, Rule, UUIDConverter

from keystile import errors
from keystile.web.context import EXTENSION_KEY
from keystile.web.errors import HTTP_CODES, status_for_type
from keystile.web.schemas import ErrorResponse

__all__ = [
    "AuthDoc",
    "KeystileOpenAPI",
    "document_auth",
    "inline_schema",
    "may_fail",
    "quart_schema_options",
    "responds",
]

F = TypeVar("F", bound=Callable[..., Any])

_RESPONSES_ATTR = "_keystile_openapi_responses"
_ERRORS_ATTR = "_keystile_openapi_errors"
_AUTH_ATTR = "_keystile_openapi_auth"
_BODY_OPTIONAL_ATTR = "_keystile_openapi_body_optional"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}

BEARER = "bearerAuth"
COOKIE = "sessionCookie"

# Answers any operation can give: headers over the limit (S24), a backing service down (S29).
_ALWAYS = frozenset({431, 503})
# Answers of an operation with a JSON body: unreadable, too large, not JSON, not valid.
_BODY = frozenset({400, 413, 415, 422})

_DESCRIPTIONS = {
    400: "The body is not readable JSON (or not UTF-8).",
    401: "No valid credentials came with the request (see `WWW-Authenticate` for tokens).",
    403: "The caller may not do this: a cookie request from another site (CSRF), "
    "or a token without the scope.",
    404: "Nothing is here (or it is not the caller's).",
    409: "The request conflicts with the current state.",
    413: "The body is larger than the configured maximum.",
    415: "The body is not JSON: send `Content-Type: application/json`.",
    422: "The body or query string is well-formed but not acceptable; `fields` says where.",
    429: "Too many requests: retry after `Retry-After` seconds.",
    431: "The request headers are larger than the configured maximum.",
    503: "Busy or a backing service is unavailable: retry after `Retry-After` seconds.",
}
_SUCCESS_DESCRIPTIONS = {
    200: "OK.",
    201: "Created.",
    202: "Accepted.",
    204: "Done; no body.",
    304: "Not modified: the copy named in `If-None-Match` is current.",
}
_SCHEME_DESCRIPTIONS = {
    BEARER: "An access token from POST /v1/tokens, as `Authorization: Bearer <token>`.",
    COOKIE: "The session cookie from POST /v1/sessions. A state-changing request with it "
    "must come from this origin: a browser's `Origin` or `Sec-Fetch-Site` header naming "
    "another site gets 403 `csrf_failed` (S11). Browsers send those headers themselves.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


@dataclass(frozen=True)
class _Success:
    description: str
    content_type: str | None
    schema: dict[str, Any] | None


@dataclass(frozen=True)
class AuthDoc:
    """How an operation authenticates: which schemes, and which scopes a token needs."""

    schemes: tuple[str, ...]
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()  # listed as `role:<name>` under every scheme


def responds(
    status: int,
    description: str = "",
    *,
    content_type: str | None = None,
    schema: dict[str, Any] | None = None,
) -> Callable[[F], F]:
    """Document a non-error answer that no response model describes (204, 304, raw bodies)."""

    def decorator(func: F) -> F:
        known: dict[int, _Success] = dict(getattr(func, _RESPONSES_ATTR, {}))
        text = description or _SUCCESS_DESCRIPTIONS.get(status, "")
        known[status] = _Success(text, content_type, schema)
        setattr(func, _RESPONSES_ATTR, known)
        return func

    return decorator


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return `model`'s JSON schema with the models it nests written in place, for `responds`.

    pydantic refers to nested models as `#/$defs/...`; inside an operation of the OpenAPI
    document that points at the document's root, where there is no `$defs`.
    """
    schema = model.model_json_schema()
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            name = reference.removeprefix("#/$defs/")
            if name in seen:
                raise ValueError(f"{model.__name__} nests {name} in itself: it cannot be inlined")
            return resolve(definitions[name], (*seen, name))
        return {key: resolve(value, seen) for key, value in node.items()}

    resolved: dict[str, Any] = resolve(schema, ())
    return resolved


def body_optional(func: F) -> F:
    """Document the request body as optional (the operation also serves callers without one)."""
    setattr(func, _BODY_OPTIONAL_ATTR, True)
    return func


def may_fail(*statuses: int) -> Callable[[F], F]:
    """Document error statuses an operation answers beyond those its decorators imply."""

    def decorator(func: F) -> F:
        note_errors(func, *statuses)
        return func

    return decorator


def note_errors(func: Callable[..., Any], *statuses: int) -> None:
    """Add error statuses to `func`'s document (for decorators such as `rate_limited`)."""
    setattr(func, _ERRORS_ATTR, frozenset(getattr(func, _ERRORS_ATTR, ())) | frozenset(statuses))


def document_auth(func: Callable[..., Any], auth: AuthDoc) -> None:
    """Record how `func` authenticates (called by `requires_auth` and `requires_session`)."""
    setattr(func, _AUTH_ATTR, auth)


def _codes_by_status() -> dict[int, list[str]]:
    """Return the stable error codes each status can carry, from the error tree and HTTP."""
    codes: dict[int, list[str]] = {}
    for error in _subclasses(errors.KeystileError):
        if error.__module__ == errors.__name__ and "code" in vars(error):
            codes.setdefault(status_for_type(error), []).append(error.code)
    for status, (code, _) in HTTP_CODES.items():
        codes.setdefault(status, [])
        if code not in codes[status]:
            codes[status].append(code)
    codes.setdefault(422, []).append("validation_failed")
    return codes


def _subclasses(cls: type[errors.KeystileError]) -> Iterator[type[errors.KeystileError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


# Blueprints that are not the JSON API: pages, their assets and docs, health, metrics.
_NOT_API = frozenset({"pages", "assets", "api_docs", "health", "metrics"})


class KeystileOpenAPI(OpenAPIProvider):
    """quart-schema's provider, plus every status, the error schema and the security."""

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        components = document.setdefault("components", {})
        components.setdefault("schemas", {})["ErrorResponse"] = _error_schema()
        # quart-schema's scheme classes take no description; add them here.
        for name, scheme in components.get("securitySchemes", {}).items():
            scheme.setdefault("description", _SCHEME_DESCRIPTIONS.get(name, ""))
        return document

    def generate_rules(self) -> Iterable[Rule]:
        """Every route but the HTML pages and the operational ones, by blueprint.

        By blueprint rather than by `hide` on each route, so a new page can never slip
        into the API document.
        """
        for rule in super().generate_rules():
            if rule.endpoint.partition(".")[0] not in _NOT_API:
                yield rule

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        if isinstance(converter, UUIDConverter):
            parameter["schema"] = {"type": "string", "format": "uuid"}
        return parameter

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        func = self._app.view_functions[rule.endpoint]
        services = self._app.extensions.get(EXTENSION_KEY)
        settings = services.settings if services is not None else None
        for operations in paths.values():
            for method, operation in operations.items():
                _complete(operation, func, method.upper(), bool(rule.arguments))
                if settings is not None:
                    _narrow_scope(operation, settings.tokens.scopes)
                    _narrow_key_expiry(operation, settings.machine.api_key_max_days)
        return paths, components


def _narrow_key_expiry(operation: dict[str, Any], max_days: int) -> None:
    """Say how long this deployment lets an API key live (`api_key_max_days`)."""
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    expiry = body.get("schema", {}).get("properties", {}).get("expires_in_days")
    if expiry is not None:
        expiry["maximum"] = max_days


def _narrow_scope(operation: dict[str, Any], scopes: Iterable[str]) -> None:
    """Say which scopes this deployment grants: a schema-valid `scope` is one it accepts."""
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    properties = body.get("schema", {}).get("properties", {})
    listed = properties.get("scopes")  # an array of scopes (API keys)
    if listed is not None and listed.get("type") == "array":
        listed["items"] = {"type": "string", "enum": sorted(scopes)}
    scope = properties.get("scope")
    if scope is None:
        return
    words = "|".join(re.escape(word) for word in sorted(scopes))
    pattern = f"^ *(?:(?:{words})(?: +(?:{words}))*)? *$"
    for branch in scope.get("anyOf", [scope]):
        if branch.get("type") == "string":
            branch["pattern"] = pattern
            branch["description"] = (
                "Space-separated scopes to grant, each one of: "
                + ", ".join(f"`{word}`" for word in sorted(scopes))
                + ". Empty or absent: all of them."
            )


def _complete(operation: dict[str, Any], func: Any, method: str, has_path_args: bool) -> None:
    responses: dict[Any, Any] = {
        int(status): response for status, response in operation["responses"].items()
    }
    for status, success in getattr(func, _RESPONSES_ATTR, {}).items():
        response: dict[str, Any] = {"description": success.description}
        if success.content_type is not None:
            response["content"] = {success.content_type: {"schema": success.schema or {}}}
        responses[status] = response
    for response in responses.values():
        response["description"] = response.get("description") or "OK."

    failures = set(_ALWAYS) | set(getattr(func, _ERRORS_ATTR, ()))
    if getattr(func, QUART_SCHEMA_REQUEST_ATTRIBUTE, None) is not None:
        failures |= _BODY
        operation["requestBody"]["required"] = not getattr(func, _BODY_OPTIONAL_ATTR, False)
    if getattr(func, QUART_SCHEMA_QUERYSTRING_ATTRIBUTE, None) is not None:
        failures.add(422)
    if has_path_args:
        failures.add(404)
    auth: AuthDoc | None = getattr(func, _AUTH_ATTR, None)
    if auth is not None:
        failures.add(401)
        # 403: missing scope or role, a client token where a user is needed
        # (`user_required`), or a cross-site cookie change.
        if (
            auth.scopes
            or auth.roles
            or BEARER in auth.schemes
            or (COOKIE in auth.schemes and method not in _SAFE_METHODS)
        ):
            failures.add(403)
        roles = [f"role:{role}" for role in sorted(auth.roles)]
        operation["security"] = [
            {scheme: (sorted(auth.scopes) if scheme == BEARER else []) + roles}
            for scheme in auth.schemes
        ]
    codes = _codes_by_status()
    for status in sorted(failures):
        responses.setdefault(status, _error_response(status, codes.get(status, [])))
    operation["responses"] = {str(status): responses[status] for status in sorted(responses)}


def _error_response(status: int, codes: list[str]) -> dict[str, Any]:
    code = codes[0] if codes else f"http_{status}"
    message = HTTP_CODES.get(status, (code, "The request failed."))[1]
    description = _DESCRIPTIONS.get(status, "The request failed.")
    if codes:
        description += " Codes: " + ", ".join(f"`{c}`" for c in codes) + "."
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/json": {
                "schema": _ERROR_REF,
                "example": {"error": {"code": code, "message": message}},
            }
        },
    }
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response


def _error_schema() -> dict[str, Any]:
    schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    body = definitions.get("ErrorBody", {})
    body["description"] = (
        "`code` is stable (docs/errors.md lists them); `message` is for people; "
        "`fields` (422 only) names each invalid field."
    )
    schema["properties"]["error"] = body
    return schema


def quart_schema_options(cookie_name: str, scopes: Iterable[str]) -> dict[str, Any]:
    """Return QuartSchema's arguments: info, security schemes, this provider, no CDN UIs.

    `cookie_name` is the session cookie's name in this deployment, `scopes` the scopes
    it grants (the OAuth client-credentials flow lists them).
    """
    flows = {
        "clientCredentials": {
            "tokenUrl": "/v1/oauth/token",
            "scopes": {scope: f"the {scope} scope" for scope in scopes},
        }
    }
    return {
        "info": {
            "title": "keystile",
            "version": "1",
            "description": inspect.cleandoc(
                """An authentication service: register, log in with a session cookie or
                tokens, refresh, log out, list and end sessions.

                Every error answer has one shape, `{"error": {"code", "message"}}`."""
            ),
        },
        "security_schemes": {
            # An access token (POST /v1/tokens or /v1/oauth/token) or an API key (ks_pat_).
            BEARER: {"type": "http", "scheme": "bearer", "bearer_format": "JWT or API key"},
            COOKIE: {"type": "apiKey", "in_": "cookie", "name": cookie_name},
            "clientCredentials": {"type": "oauth2", "flows": flows},
            "clientBasic": {"type": "http", "scheme": "basic"},  # RFC 6749 2.3.1
        },
        "openapi_provider_class": KeystileOpenAPI,
        # Swagger UI is served by keystile itself (web/api_docs.py); redoc and scalar
        # would load from CDNs, so they are off.
        "swagger_ui_path": None,
        "redoc_ui_path": None,
        "scalar_ui_path": None,
    }
