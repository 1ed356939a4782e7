"""Cookie sessions: POST /v1/sessions (log in), DELETE /v1/sessions/current (log out)."""

from __future__ import annotations

from quart import Blueprint, g
from quart.typing import ResponseReturnValue
from quart_schema import validate_request, validate_response

from keystile.web.auth import (
    check_same_origin,
    end_cookie_session,
    requires_session,
    start_cookie_session,
)
from keystile.web.context import client_info, services
from keystile.web.schemas import LoginRequest, LoginResponse, UserResponse

blueprint = Blueprint("sessions", __name__)


@blueprint.post("/v1/sessions")
@validate_request(LoginRequest)
@validate_response(LoginResponse, 201)
async def login(data: LoginRequest) -> tuple[LoginResponse, int]:
    """Log in with email and password; the session cookie comes back in Set-Cookie."""
    check_same_origin()  # login CSRF: no other site may log a browser into an account
    user, session_id = await services().auth.login(data.email, data.password, client_info())
    start_cookie_session(session_id)
    return LoginResponse(
        user=UserResponse(id=user.id, email=user.email),
        expires_in=services().settings.session_absolute_lifetime_seconds,
    ), 201


@blueprint.delete("/v1/sessions/current")
@requires_session
async def logout() -> ResponseReturnValue:
    """End the current session on the server and drop the cookie (S9)."""
    principal = g.keystile_principal
    await services().sessions.end(principal.session_id_hash)
    end_cookie_session()
    return "", 204
