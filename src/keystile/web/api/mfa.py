"""Second factors: TOTP enrollment, recovery codes, and the login's second step.

`POST /v1/sessions/mfa` and `POST /v1/tokens/mfa` take the `mfa_token` of a 401
`mfa_required` answer with a code, and answer as the password step would have.
"""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import validate_request, validate_response
from werkzeug.datastructures import Headers

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
    MfaCompleteRequest,
    MfaStatusResponse,
    RecoveryCodesResponse,
    TotpCodeRequest,
    TotpRemoveRequest,
    TotpSetupResponse,
)
from keystile.web.openapi import may_fail, responds
from keystile.web.schemas import LoginResponse, TokenResponse, UserResponse

blueprint = Blueprint("mfa", __name__)


@blueprint.get("/v1/me/mfa")
@requires_auth()
@validate_response(MfaStatusResponse)
async def status() -> MfaStatusResponse:
    """Say which second factors the caller has set up."""
    found = await services().factors.status(get_principal())
    return MfaStatusResponse(
        totp=found.totp,
        totp_pending=found.totp_pending,
        passkeys=found.passkeys,
        recovery_codes_left=found.recovery_codes_left,
        recovery_codes_outdated=found.recovery_codes_outdated,
    )


@blueprint.post("/v1/me/mfa/totp")
@may_fail(409)
@requires_auth()
@requires_recent_auth
@validate_response(TotpSetupResponse, 201)
async def begin_totp() -> tuple[TotpSetupResponse, int]:
    """Start setting up an authenticator app; it counts once confirmed with a code."""
    setup = await services().factors.begin_totp(get_principal())
    return TotpSetupResponse(
        secret=setup.secret, otpauth_uri=setup.otpauth_uri, qr_svg=setup.qr_svg
    ), 201


@blueprint.post("/v1/me/mfa/totp/confirm")
@may_fail(404, 409, 429)
@requires_auth()
@requires_recent_auth
@validate_request(TotpCodeRequest)
@validate_response(RecoveryCodesResponse)
async def confirm_totp(data: TotpCodeRequest) -> RecoveryCodesResponse:
    """Confirm the authenticator app with a current code; the recovery codes come back once."""
    codes = await services().factors.confirm_totp(get_principal(), data.code, client_info())
    return RecoveryCodesResponse(recovery_codes=codes)


@blueprint.delete("/v1/me/mfa/totp")
@responds(204, "The authenticator app no longer counts as a factor.")
@may_fail(404, 429)
@requires_auth()
@validate_request(TotpRemoveRequest)
async def remove_totp(data: TotpRemoveRequest) -> ResponseReturnValue:
    """Remove the authenticator app: with a current `code`, or after a recent login.

    The last factor needs a current code (401 `factor_required` without it).
    """
    principal = get_principal()
    await services().factors.remove_totp(
        principal,
        client_info(),
        code=data.code,
        recent=recently_authenticated(principal),
    )
    return "", 204


@blueprint.post("/v1/me/mfa/recovery-codes")
@may_fail(404)
@requires_auth()
@requires_recent_auth
@validate_response(RecoveryCodesResponse)
async def regenerate_recovery_codes() -> RecoveryCodesResponse:
    """Replace the recovery codes with ten new ones, shown once; the old ones stop working."""
    codes = await services().factors.regenerate_recovery_codes(get_principal(), client_info())
    return RecoveryCodesResponse(recovery_codes=codes)


@blueprint.post("/v1/sessions/mfa")
@may_fail(401, 403, 429)
@validate_request(MfaCompleteRequest)
@validate_response(LoginResponse, 201)
async def complete_session(data: MfaCompleteRequest) -> tuple[LoginResponse, int]:
    """Finish a password login with a second factor; the session cookie comes back."""
    check_same_origin()
    client = client_info()
    step = await services().mfa.complete(
        data.mfa_token, client, mode="session", code=data.code, recovery_code=data.recovery_code
    )
    started = await services().auth.start_session(
        step.user, client, amr=step.amr, proved=step.event
    )
    start_cookie_session(started.session_id)
    return LoginResponse(
        user=UserResponse(id=step.user.id, email=step.user.email),
        expires_in=services().settings.sessions.absolute_lifetime_seconds,
    ), 201


@blueprint.post("/v1/tokens/mfa")
@may_fail(401, 429)
@validate_request(MfaCompleteRequest)
@validate_response(TokenResponse)
async def complete_tokens(data: MfaCompleteRequest) -> tuple[TokenResponse, int, Headers]:
    """Finish a password grant with a second factor; tokens as `POST /v1/tokens` gives them."""
    client = client_info()
    step = await services().mfa.complete(
        data.mfa_token, client, mode="tokens", code=data.code, recovery_code=data.recovery_code
    )
    tokens = services().tokens
    pair = await tokens.start_family(
        step.user, tokens.requested_scopes(step.scope), client, amr=step.amr, proved=step.event
    )
    return token_response(pair)
