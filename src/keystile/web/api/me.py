"""The caller's own account: GET /v1/me, password change, log out everywhere.

Each accepts a bearer token or a session cookie (the CSRF check applies to the cookie).
"""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_request, validate_response

from keystile.rates import Action
from keystile.web.auth import (
    end_cookie_session,
    get_principal,
    requires_auth,
    requires_recent_auth,
)
from keystile.web.context import client_info, services
from keystile.web.openapi import responds
from keystile.web.rate_limits import rate_limited
from keystile.web.schemas import MeResponse, PasswordChangeRequest

blueprint = Blueprint("me", __name__)


@blueprint.get("/v1/me")
@requires_auth()
@validate_response(MeResponse)
async def me() -> MeResponse:
    """Return the authenticated user."""
    principal = get_principal()
    user = await services().users.select_user_by_email(principal.email)  # cached (hot path 2)
    verified = user is not None and user.id == principal.user_id and user.email_verified
    return MeResponse(
        id=principal.user_id,
        email=principal.email,
        email_verified=verified,
        authenticated_via=principal.via,
    )


@blueprint.post("/v1/me/password")
@responds(204, "Changed; the caller's other sessions and token families have ended.")
@requires_auth()
@requires_recent_auth
@validate_request(PasswordChangeRequest)
@rate_limited(Action.PASSWORD_CHANGE, account=lambda **_: get_principal().user_id)
async def change_password(data: PasswordChangeRequest) -> tuple[str, int]:
    """Change the password; other sessions, every token family and access token end (S3)."""
    await services().auth.change_password(
        get_principal(), data.current_password, data.new_password, client_info()
    )
    return "", 204


@blueprint.post("/v1/me/logout-everywhere")
@responds(204, "Every session, refresh token and access token of the caller has ended.")
@requires_auth()
async def logout_everywhere() -> tuple[str, int]:
    """End every session, refresh token and access token of the caller, this one included (S17)."""
    principal = get_principal()
    await services().auth.logout_everywhere(principal, client_info())
    if principal.via == "session":
        end_cookie_session()
    return "", 204
