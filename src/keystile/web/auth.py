"""Cookie sessions on requests: who is calling, and the guard for protected routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

from quart import g, request
from quart_auth import AuthUser, current_user, login_user, logout_user

from keystile.errors import CsrfRejected, NotAuthenticated
from keystile.services.types import Principal
from keystile.web.caching import mark_requires_credentials
from keystile.web.context import services

__all__ = [
    "check_same_origin",
    "current_principal",
    "end_cookie_session",
    "requires_session",
    "start_cookie_session",
]

P = ParamSpec("P")
R = TypeVar("R")

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def mark_auth_dependent() -> None:
    """Record that the response depends on the caller's credentials (for Vary, S21)."""
    g.keystile_auth_dependent = True


async def current_principal() -> Principal | None:
    """Return the principal of the request's session cookie, or None."""
    if "keystile_principal" in g:
        return g.keystile_principal  # type: ignore[no-any-return]
    mark_auth_dependent()
    principal = None
    session_id = current_user.auth_id
    if session_id is not None:
        try:
            principal = await services().sessions.authenticate(session_id)
        except NotAuthenticated:
            principal = None
    g.keystile_principal = principal
    return principal


def check_same_origin() -> None:
    """Raise `CsrfRejected` if a browser says the request came from another site."""
    # Browsers send Sec-Fetch-Site and Origin on every cross-site state change;
    # a request carrying neither is not from a browser and so is no CSRF vector.
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        if fetch_site not in {"same-origin", "none"}:
            raise CsrfRejected()
        return
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise CsrfRejected()


def requires_session(
    handler: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Refuse the request with 401 unless it carries a live session cookie.

    State-changing methods are also checked for cross-site origin (S11). Combining it
    with `http_cache(public=True)` raises at import time (S22).
    """

    @wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        principal = await current_principal()
        if principal is None:
            raise NotAuthenticated()
        if request.method not in _SAFE_METHODS:
            check_same_origin()
        return await handler(*args, **kwargs)

    mark_requires_credentials(wrapper)
    return wrapper


def start_cookie_session(session_id: str) -> None:
    """Send the session id in the signed quart-auth cookie (never the user id, S7)."""
    login_user(AuthUser(session_id))


def end_cookie_session() -> None:
    """Tell the browser to drop the cookie; the server-side revocation is the service's job."""
    logout_user()
