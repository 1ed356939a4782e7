"""API tokens: POST /v1/tokens (password grant), /v1/tokens/refresh, /v1/tokens/revoke.

Every answer here is `Cache-Control: no-store` (the app's default, S20).
"""

from __future__ import annotations

from quart import Blueprint, request
from quart.typing import ResponseReturnValue
from quart_schema import validate_request, validate_response
from werkzeug.datastructures import Headers

from keystile.rates import Action
from keystile.services.tokens import TokenPair
from keystile.web.caching import pragma_no_cache
from keystile.web.context import client_info, services
from keystile.web.login_refusal import admission_of
from keystile.web.openapi import may_fail, responds
from keystile.web.rate_limits import note_rate_limit, rate_limited
from keystile.web.schemas import RefreshRequest, RevokeRequest, TokenRequest, TokenResponse

blueprint = Blueprint("tokens", __name__)


def token_response(pair: TokenPair) -> tuple[TokenResponse, int, Headers]:
    """Return the answer of a token endpoint for `pair` (also the MFA step's)."""
    return (
        TokenResponse(
            access_token=pair.access_token,
            token_type="Bearer",  # noqa: S106
            expires_in=pair.expires_in,
            refresh_token=pair.refresh_token,
            scope=pair.scope,
        ),
        200,
        pragma_no_cache(),
    )


@blueprint.post("/v1/tokens")
@may_fail(401, 403, 429)  # 403: email_not_verified; 429: rate limited
@validate_request(TokenRequest)
@validate_response(TokenResponse)
async def grant(data: TokenRequest) -> tuple[TokenResponse, int, Headers]:
    """Exchange email and password for an access token and a refresh token.

    Rate limited per address and per account ("token"), charged with the login's other
    checks in one Redis call.
    """
    pair = await services().tokens.grant_password(
        data.email,
        data.password,
        data.scope,
        client_info(),
        # Made in front of Quart (web/login_refusal.py).
        admission=admission_of(request.scope),
    )
    note_rate_limit(pair.limits)
    return token_response(pair)


@blueprint.post("/v1/tokens/refresh")
@may_fail(401)
@validate_request(RefreshRequest)
@validate_response(TokenResponse)
# Per address, and per account as the token names it (checked before it is spent, so a
# refused refresh keeps its token); an older token that names no one, per address only.
@rate_limited(Action.REFRESH, account=lambda data: services().tokens.account_of(data.refresh_token))
async def refresh(data: RefreshRequest) -> tuple[TokenResponse, int, Headers]:
    """Rotate a refresh token: the answer holds its successor and a new access token (S16)."""
    pair = await services().tokens.refresh(data.refresh_token, client_info())
    return token_response(pair)


@blueprint.post("/v1/tokens/revoke")
@responds(204, "Revoked, or it was not a live token: the answer is the same (RFC 7009).")
@validate_request(RevokeRequest)
async def revoke(data: RevokeRequest) -> ResponseReturnValue:
    """Revoke a refresh token or its family; 204 whether or not it was known (RFC 7009)."""
    await services().tokens.revoke(data.refresh_token, family=data.family, client=client_info())
    return "", 204
