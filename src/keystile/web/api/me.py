"""The caller's own account: GET /v1/me, password change, log out everywhere."""

from __future__ import annotations

from quart import Blueprint, g
from quart_schema import validate_request, validate_response

from keystile.web.auth import end_cookie_session, requires_session
from keystile.web.context import client_info, services
from keystile.web.rate_limits import rate_limited
from keystile.web.schemas import MeResponse, PasswordChangeRequest

blueprint = Blueprint("me", __name__)


@blueprint.get("/v1/me")
@requires_session
@validate_response(MeResponse)
async def me() -> MeResponse:
    """Return the authenticated user."""
    principal = g.keystile_principal
    return MeResponse(id=principal.user_id, email=principal.email, authenticated_via=principal.via)


@blueprint.post("/v1/me/password")
@requires_session
@validate_request(PasswordChangeRequest)
@rate_limited("password_change", account=lambda **_: g.keystile_principal.user_id)
async def change_password(data: PasswordChangeRequest) -> tuple[str, int]:
    """Change the password; other sessions and all earlier access tokens end (S3)."""
    await services().auth.change_password(
        g.keystile_principal, data.current_password, data.new_password, client_info()
    )
    return "", 204


@blueprint.post("/v1/me/logout-everywhere")
@requires_session
async def logout_everywhere() -> tuple[str, int]:
    """End every session and access token of the caller, this one included (S17)."""
    await services().auth.logout_everywhere(g.keystile_principal, client_info())
    end_cookie_session()
    return "", 204
