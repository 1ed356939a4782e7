"""GET /v1/me: who the caller is."""

from __future__ import annotations

from quart import Blueprint, g
from quart_schema import validate_response

from keystile.web.auth import requires_session
from keystile.web.schemas import MeResponse

blueprint = Blueprint("me", __name__)


@blueprint.get("/v1/me")
@requires_session
@validate_response(MeResponse)
async def me() -> MeResponse:
    """Return the authenticated user."""
    principal = g.keystile_principal
    return MeResponse(id=principal.user_id, email=principal.email, authenticated_via=principal.via)
