"""Cookie sessions: log in, list mine, log out, revoke one of mine."""

from __future__ import annotations

from uuid import UUID

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import validate_request, validate_response

from keystile.services.sessions import SessionView
from keystile.web.auth import (
    check_same_origin,
    end_cookie_session,
    get_principal,
    requires_session,
    start_cookie_session,
)
from keystile.web.context import client_info, services
from keystile.web.openapi import may_fail, responds
from keystile.web.rate_limits import note_rate_limit
from keystile.web.schemas import (
    LoginRequest,
    LoginResponse,
    SessionListResponse,
    SessionResponse,
    UserResponse,
)

blueprint = Blueprint("sessions", __name__)


@blueprint.post("/v1/sessions")
@may_fail(401, 403, 429)  # 403: cross-site, or email_not_verified; 429: rate limited
@validate_request(LoginRequest)
@validate_response(LoginResponse, 201)
async def login(data: LoginRequest) -> tuple[LoginResponse, int]:
    """Log in with email and password; the session cookie comes back in Set-Cookie.

    Rate limited per address and per account ("login"), charged with the login's other
    checks in one Redis call.
    """
    check_same_origin()  # login CSRF: no other site may log a browser into an account
    started = await services().auth.login(data.email, data.password, client_info())
    note_rate_limit(started.limits)
    start_cookie_session(started.session_id)
    user = started.user
    return LoginResponse(
        user=UserResponse(id=user.id, email=user.email),
        expires_in=services().settings.sessions.absolute_lifetime_seconds,
    ), 201


@blueprint.get("/v1/sessions")
@requires_session
@validate_response(SessionListResponse)
async def list_sessions() -> SessionListResponse:
    """List the caller's live sessions, newest first; `current` marks this one."""
    views = await services().sessions.list_sessions(get_principal())
    return SessionListResponse(sessions=[session_response(view) for view in views])


@blueprint.delete("/v1/sessions/current")
@responds(204, "Logged out; the cookie is dropped.")
@requires_session
async def logout() -> ResponseReturnValue:
    """End the current session on the server and drop the cookie (S9)."""
    await services().auth.logout(get_principal(), client_info())
    end_cookie_session()
    return "", 204


@blueprint.delete("/v1/sessions/<uuid:session_id>")
@responds(204, "The session has ended.")
@requires_session
async def revoke(session_id: UUID) -> ResponseReturnValue:
    """End one of the caller's sessions by its public id; 404 if it is not theirs."""
    if await services().auth.revoke_session(get_principal(), session_id, client_info()):
        end_cookie_session()
    return "", 204


def session_response(view: SessionView) -> SessionResponse:
    """Return the API shape of a session view."""
    return SessionResponse(
        id=view.public_id,
        created_at=view.created_at,
        last_seen_at=view.last_seen_at,
        expires_at=view.expires_at,
        device=view.device,
        ip=view.ip,
        current=view.current,
    )
