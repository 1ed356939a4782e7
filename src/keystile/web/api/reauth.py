"""Re-authentication (step-up) without a new login: docs/mfa.md, S42.

`POST /v1/me/reauthenticate` takes the password, a TOTP code or a recovery code;
`POST /v1/me/reauthenticate/passkey/options` and `POST /v1/me/reauthenticate/passkey`
do the same with one of the caller's own passkeys. A cookie session keeps its id and
gets a fresh auth_time; a bearer caller gets a new access token of the same login
(its refresh token does not change).
"""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_request, validate_response
from werkzeug.datastructures import Headers

from keystile.rates import Action
from keystile.services.reauth import Reauthenticated
from keystile.web.auth import get_principal, requires_auth
from keystile.web.caching import pragma_no_cache
from keystile.web.context import client_info, services
from keystile.web.mfa_schemas import (
    ReauthPasskeyRequest,
    ReauthRequest,
    ReauthResponse,
    WebAuthnOptions,
)
from keystile.web.openapi import may_fail
from keystile.web.rate_limits import rate_limited

blueprint = Blueprint("reauth", __name__)


@blueprint.post("/v1/me/reauthenticate")
@may_fail(401, 403, 429, 503)
@requires_auth()
@validate_request(ReauthRequest)
@validate_response(ReauthResponse)
async def reauthenticate(data: ReauthRequest) -> tuple[ReauthResponse, int, Headers]:
    """Prove it is still you with the password, a TOTP code or a recovery code.

    Wrong: 401 `invalid_credentials` or `invalid_mfa_code`, counted by the login's or
    the second factor's per-account backoff (429 with Retry-After while it runs); a
    password is hashed under the login's admission (503 `overloaded` over budget).
    """
    principal, client = get_principal(), client_info()
    reauth = services().reauth
    if data.password is not None:
        done = await reauth.with_password(principal, data.password, client)
    else:
        done = await reauth.with_code(
            principal, client, code=data.code, recovery_code=data.recovery_code
        )
    return _answer(done)


@blueprint.post("/v1/me/reauthenticate/passkey/options")
@may_fail(403, 404, 429)
@requires_auth()
@validate_response(WebAuthnOptions)
@rate_limited(Action.LOGIN, account=lambda **_: get_principal().user_id)
async def passkey_options() -> WebAuthnOptions:
    """Return WebAuthn request options listing the caller's own passkeys (404: none)."""
    return WebAuthnOptions(**await services().reauth.passkey_options(get_principal()))


@blueprint.post("/v1/me/reauthenticate/passkey")
@may_fail(401, 403, 422, 429)
@requires_auth()
@validate_request(ReauthPasskeyRequest)
@validate_response(ReauthResponse)
@rate_limited(Action.LOGIN, account=lambda **_: get_principal().user_id)
async def reauthenticate_passkey(
    data: ReauthPasskeyRequest,
) -> tuple[ReauthResponse, int, Headers]:
    """Prove it is still you with one of your passkeys; another user's is refused (401)."""
    done = await services().reauth.with_passkey(get_principal(), data.credential, client_info())
    return _answer(done)


def _answer(done: Reauthenticated) -> tuple[ReauthResponse, int, Headers]:
    grant = done.grant
    if grant is None:
        return ReauthResponse(auth_time=done.auth_time, amr=list(done.amr)), 200, pragma_no_cache()
    return (
        ReauthResponse(
            auth_time=done.auth_time,
            amr=list(done.amr),
            access_token=grant.access_token,
            token_type="Bearer",  # noqa: S106
            expires_in=grant.expires_in,
            scope=grant.scope,
        ),
        200,
        pragma_no_cache(),
    )
