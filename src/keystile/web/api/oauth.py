"""OAuth 2.0 for machines: POST /v1/oauth/token (client credentials), /v1/oauth/introspect.

Both take form-encoded bodies and client authentication by HTTP Basic
(client_secret_basic) or by `client_id`/`client_secret` in the form
(client_secret_post), never both (RFC 6749 2.3.1). Errors use the RFC 6749 5.2 body
`{"error": ..., "error_description": ...}`, not keystile's usual one, because that is
what OAuth client libraries read.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote_plus

from quart import Blueprint, Response, jsonify, request
from quart_schema import DataSource, document_request, document_response, security_scheme
from werkzeug.datastructures import MultiDict

from keystile.errors import (
    DependencyUnavailable,
    InvalidClient,
    InvalidInput,
    InvalidRequest,
    KeystileError,
    RateLimited,
    UnsupportedGrantType,
)
from keystile.services.clients import ClientCredentials
from keystile.web.context import client_info, request_state, services
from keystile.web.machine_schemas import (
    ClientTokenRequest,
    ClientTokenResponse,
    IntrospectionRequest,
    IntrospectionResponse,
    OAuthErrorResponse,
)

blueprint = Blueprint("oauth", __name__)

# RFC 6749 5.1: no cache may keep a token answer, HTTP/1.0 ones included.
_NO_CACHE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM = "application/x-www-form-urlencoded"
_CLIENT_AUTH: list[dict[str, list[str]]] = [
    {"clientBasic": []},
    {},
]  # Basic, or client_id/client_secret in the form


def _oauth_error(error: KeystileError) -> Response:
    """Answer a failure in the RFC 6749 5.2 shape."""
    headers = dict(_NO_CACHE)
    if isinstance(error, InvalidClient):
        status, code = 401, error.code
        if error.basic:
            headers["WWW-Authenticate"] = 'Basic realm="keystile", charset="UTF-8"'
    elif isinstance(error, RateLimited):
        status, code = 429, error.code
        headers["Retry-After"] = str(error.retry_after)
        request_state().rate_limit = error.status
    elif isinstance(error, DependencyUnavailable):
        status, code = 503, "temporarily_unavailable"
        headers["Retry-After"] = str(error.retry_after)
    elif isinstance(error, InvalidInput):
        # invalid_request, invalid_scope, unsupported_grant_type, invalid_target
        status, code = 400, error.code if error.code != "invalid_input" else "invalid_request"
    else:
        status, code = 400, "invalid_request"
    response = jsonify({"error": code, "error_description": error.message})
    response.status_code = status
    response.headers.update(headers)
    return response


_PARAMETERS = frozenset(
    {"grant_type", "scope", "audience", "client_id", "client_secret", "token", "token_type_hint"}
)


async def _form() -> MultiDict[str, str]:
    if request.mimetype != _FORM:
        raise InvalidRequest(f"Send the parameters form-encoded ({_FORM}).")
    form: MultiDict[str, str] = await request.form
    # RFC 6749 3.1-3.2: a parameter must not be repeated; unknown ones are ignored.
    for name in _PARAMETERS & set(form):
        if len(form.getlist(name)) > 1:
            raise InvalidRequest(f"The parameter {name} is repeated.")
    return form


def _credentials(form: MultiDict[str, str]) -> ClientCredentials:
    """Read the client's id and secret from HTTP Basic or from the form (one of them)."""
    posted_id, posted_secret = form.get("client_id"), form.get("client_secret")
    header = request.headers.get("Authorization")
    if header is not None and header.partition(" ")[0].lower() != "basic":
        header = None  # a bearer token or another scheme is no client authentication here
    if header is None:
        if not posted_id or not posted_secret:
            # Tell the client which method we expect (RFC 6749 5.2).
            raise InvalidClient("Client authentication is required.", basic=True)
        return ClientCredentials(posted_id, posted_secret, basic=False)
    if posted_secret is not None:
        raise InvalidRequest("Authenticate with HTTP Basic or with the form, not both.")
    _, _, value = header.partition(" ")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient(basic=True) from None
    raw_id, colon, raw_secret = decoded.partition(":")
    if not colon:
        raise InvalidClient(basic=True)
    # RFC 6749 2.3.1: both are form-urlencoded before they are joined.
    client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
    if posted_id is not None and posted_id != client_id:
        raise InvalidRequest("client_id in the form differs from the one in HTTP Basic.")
    return ClientCredentials(client_id, secret, basic=True)


@blueprint.post("/v1/oauth/token")
@document_request(ClientTokenRequest, source=DataSource.FORM)
@document_response(ClientTokenResponse, 200)
@document_response(OAuthErrorResponse, 400)
@document_response(OAuthErrorResponse, 401)
@document_response(OAuthErrorResponse, 429)
@security_scheme(_CLIENT_AUTH)
async def token() -> Response:
    """Client credentials grant (RFC 6749 4.4): a JWT access token for the client.

    `scope` (space-separated) defaults to all the client's scopes; `audience` to
    keystile's own (the client may name the one it was registered with). Rate limited
    per client and per address. Errors: invalid_request, invalid_client (401),
    unsupported_grant_type, invalid_scope, invalid_target (RFC 8707).
    """
    try:
        form = await _form()
        credentials = _credentials(form)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required.")
        if grant_type != "client_credentials":
            raise UnsupportedGrantType()
        answer = await services().machine.clients.grant(
            credentials, form.get("scope"), form.get("audience"), client_info()
        )
    except KeystileError as error:
        return _oauth_error(error)
    request_state().rate_limit = answer.limit
    body: dict[str, Any] = {
        "access_token": answer.access_token,
        "token_type": "Bearer",
        "expires_in": answer.expires_in,
        "scope": answer.scope,
    }
    response = jsonify(body)
    response.headers.update(_NO_CACHE)
    return response


@blueprint.post("/v1/oauth/introspect")
@document_request(IntrospectionRequest, source=DataSource.FORM)
@document_response(IntrospectionResponse, 200)
@document_response(OAuthErrorResponse, 400)
@document_response(OAuthErrorResponse, 401)
@security_scheme(_CLIENT_AUTH)
async def introspect() -> Response:
    """Token introspection (RFC 7662) for an authenticated client.

    Knows keystile's access tokens (users' and clients', any audience keystile issued
    them for) and API keys; anything else, or anything dead, is `{"active": false}`.
    """
    try:
        form = await _form()
        credentials = _credentials(form)
        token_text = form.get("token")
        if not token_text:
            raise InvalidRequest("token is required.")
        answer = await services().machine.clients.introspect(credentials, token_text)
    except KeystileError as error:
        return _oauth_error(error)
    response = jsonify(answer)
    response.headers.update(_NO_CACHE)
    return response
