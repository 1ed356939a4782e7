"""Passkeys: register and manage mine, and log in with one (docs/mfa.md, S41)."""

from __future__ import annotations

from uuid import UUID

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import validate_request, validate_response

from keystile.rates import Action
from keystile.repositories.mfa import Passkey
from keystile.services.mfa import SecondStep
from keystile.web.api.tokens import token_response
from keystile.web.auth import (
    check_same_origin,
    get_principal,
    recently_authenticated,
    requires_auth,
    requires_recent_auth,
    start_cookie_session,
)
from keystile.web.context import client_info, services
from keystile.web.mfa_schemas import (
    PasskeyCreatedResponse,
    PasskeyListResponse,
    PasskeyLoginOptionsRequest,
    PasskeyLoginRequest,
    PasskeyRegistrationRequest,
    PasskeyRenameRequest,
    PasskeyResponse,
    WebAuthnOptions,
)
from keystile.web.openapi import inline_schema, may_fail, responds
from keystile.web.rate_limits import rate_limited
from keystile.web.schemas import LoginResponse, TokenResponse, UserResponse

_TOKENS = inline_schema(TokenResponse)
_SESSION = inline_schema(LoginResponse)

blueprint = Blueprint("passkeys", __name__)


@blueprint.post("/v1/me/passkeys/options")
@may_fail(409)
@requires_auth()
@requires_recent_auth
@validate_response(WebAuthnOptions)
async def registration_options() -> WebAuthnOptions:
    """Return WebAuthn creation options for `navigator.credentials.create()` (recent login)."""
    options = await services().passkey_factors.registration_options(get_principal())
    return WebAuthnOptions(**options)


@blueprint.post("/v1/me/passkeys")
@may_fail(409, 422)
@requires_auth()
@requires_recent_auth
@validate_request(PasskeyRegistrationRequest)
@validate_response(PasskeyCreatedResponse, 201)
async def register(data: PasskeyRegistrationRequest) -> tuple[PasskeyCreatedResponse, int]:
    """Verify the new credential and store it; with the first factor, recovery codes come back."""
    passkey, codes = await services().passkey_factors.register(
        get_principal(), data.credential, data.name, client_info()
    )
    return PasskeyCreatedResponse(id=passkey.id, name=passkey.name, recovery_codes=codes), 201


@blueprint.get("/v1/me/passkeys")
@requires_auth()
@validate_response(PasskeyListResponse)
async def list_passkeys() -> PasskeyListResponse:
    """List the caller's passkeys, oldest first."""
    found = await services().passkey_factors.list(get_principal())
    return PasskeyListResponse(passkeys=[_passkey(passkey) for passkey in found])


@blueprint.patch("/v1/me/passkeys/<uuid:passkey_id>")
@responds(204, "Renamed.")
@may_fail(404)
@requires_auth()
@validate_request(PasskeyRenameRequest)
async def rename(passkey_id: UUID, data: PasskeyRenameRequest) -> ResponseReturnValue:
    """Rename one of the caller's passkeys."""
    await services().passkey_factors.rename(get_principal(), passkey_id, data.name)
    return "", 204


@blueprint.delete("/v1/me/passkeys/<uuid:passkey_id>")
@responds(204, "Deleted; it no longer logs in.")
@may_fail(404)
@requires_auth()
async def delete(passkey_id: UUID) -> ResponseReturnValue:
    """Delete a passkey (recent login; the last factor needs a login with a passkey)."""
    principal = get_principal()
    await services().passkey_factors.delete(
        principal, passkey_id, client_info(), recent=recently_authenticated(principal)
    )
    return "", 204


@blueprint.post("/v1/passkeys/login/options")
@may_fail(401, 429)
@validate_request(PasskeyLoginOptionsRequest)
@validate_response(WebAuthnOptions)
@rate_limited(Action.LOGIN)
async def login_options(data: PasskeyLoginOptionsRequest) -> WebAuthnOptions:
    """Return WebAuthn request options: passwordless, or for the second step of `mfa_token`."""
    options = await services().passkeys.authentication_options(data.mfa_token, data.mode)
    return WebAuthnOptions(**options)


@blueprint.post("/v1/passkeys/login")
@responds(200, "Tokens (`mode: tokens`).", content_type="application/json", schema=_TOKENS)
@responds(
    201,
    "A session (`mode: session`); the cookie is in Set-Cookie.",
    content_type="application/json",
    schema=_SESSION,
)
@may_fail(401, 403, 422, 429)
@validate_request(PasskeyLoginRequest)
@rate_limited(Action.LOGIN)
async def login(data: PasskeyLoginRequest) -> ResponseReturnValue:
    """Log in with a passkey: a session (`mode: session`) or tokens (`mode: tokens`).

    With `mfa_token` it completes a password login's second step instead.
    """
    if data.mode == "session":
        check_same_origin()
    client = client_info()
    done = await services().passkeys.authenticate(
        data.credential, client, mode=data.mode, mfa_token=data.mfa_token
    )
    scope = done.scope if isinstance(done, SecondStep) else data.scope
    if data.mode == "tokens":
        tokens = services().tokens
        pair = await tokens.start_family(
            done.user, tokens.requested_scopes(scope), client, amr=done.amr, proved=done.event
        )
        body, status, headers = token_response(pair)
        return body.model_dump(), status, headers
    started = await services().auth.start_session(
        done.user, client, amr=done.amr, proved=done.event
    )
    start_cookie_session(started.session_id)
    answer = LoginResponse(
        user=UserResponse(id=done.user.id, email=done.user.email),
        expires_in=services().settings.sessions.absolute_lifetime_seconds,
    )
    return answer.model_dump(mode="json"), 201


def _passkey(passkey: Passkey) -> PasskeyResponse:
    return PasskeyResponse(
        id=passkey.id,
        name=passkey.name,
        created_at=passkey.created_at,
        last_used_at=passkey.last_used_at,
        backed_up=passkey.backed_up,
    )
