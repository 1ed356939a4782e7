"""Who is calling: a bearer token or a session cookie, and the guards for protected routes.

For your own blueprints::

    from keystile.web.auth import get_principal, requires_auth

    @blueprint.get("/v1/reports")
    @requires_auth(scopes=["reports"])
    async def reports() -> dict[str, str]:
        return {"user": str(get_principal().user_id)}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import wraps
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

from quart import g, request
from quart_auth import AuthUser, current_user, login_user, logout_user

from keystile.errors import (
    CsrfRejected,
    InsufficientScope,
    InvalidToken,
    NotAuthenticated,
)
from keystile.services.types import Principal
from keystile.web.caching import mark_requires_credentials
from keystile.web.context import services
from keystile.web.openapi import BEARER, COOKIE, AuthDoc, document_auth

__all__ = [
    "authenticate_request",
    "check_same_origin",
    "current_principal",
    "end_cookie_session",
    "get_principal",
    "mark_auth_dependent",
    "requires_auth",
    "requires_session",
    "start_cookie_session",
]

P = ParamSpec("P")
R = TypeVar("R")

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def mark_auth_dependent() -> None:
    """Record that the response depends on the caller's credentials (for Vary, S21)."""
    g.keystile_auth_dependent = True


def _bearer_token() -> str | None:
    """Return the token of an `Authorization: Bearer` header; None if there is none."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token:
        raise InvalidToken()
    return token


async def current_principal() -> Principal | None:
    """Return the principal of the request's session cookie, or None.

    Cookie only: for browser pages and CSRF tokens, which are about the session. An
    API route that also takes bearer tokens uses `requires_auth` / `authenticate_request`.
    """
    if "keystile_session_principal" in g:
        return g.keystile_session_principal  # type: ignore[no-any-return]
    mark_auth_dependent()
    principal = None
    session_id = current_user.auth_id
    if session_id is not None:
        try:
            principal = await services().sessions.authenticate(session_id)
        except NotAuthenticated:
            principal = None
    g.keystile_session_principal = principal
    return principal


async def authenticate_request() -> Principal | None:
    """Return the caller from its bearer token, else its session cookie, else None.

    A bearer token that is present but bad raises (`InvalidToken`, `TokenExpired`,
    `TokenRevoked`) instead of falling back to the cookie, so the client learns why;
    catch `AuthError` where authentication is optional.
    """
    if "keystile_principal" in g:
        return g.keystile_principal  # type: ignore[no-any-return]
    mark_auth_dependent()
    token = _bearer_token()
    if token is not None:
        principal: Principal | None = await services().tokens.authenticate(token)
    else:
        principal = await current_principal()
    g.keystile_principal = principal
    return principal


def get_principal() -> Principal:
    """Return the caller inside a handler guarded by `requires_auth` or `requires_session`."""
    principal: Principal | None = g.get("keystile_principal")
    if principal is None:
        raise NotAuthenticated()
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


def requires_auth(
    *, scopes: Iterable[str] = ()
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Refuse the request with 401 unless it carries a valid bearer token or session cookie.

    A bearer token must grant every scope in `scopes` (else 403 `insufficient_scope`);
    a cookie session, being a full first-party login, grants every configured scope.
    Only cookie-authenticated state changes need the same-origin check (S11): a
    browser never attaches a bearer token by itself. The response is marked as
    depending on the caller, so it is never cached for someone else (S21), and
    combining it with `http_cache(public=True)` raises at import time (S22).
    """
    required = frozenset(scopes)

    def decorator(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(handler)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = await authenticate_request()
            if principal is None:
                raise NotAuthenticated()
            if principal.via == "bearer":
                granted = principal.scopes
            else:
                if request.method not in _SAFE_METHODS:
                    check_same_origin()
                granted = frozenset(services().settings.token_scopes)
            if not required <= granted:
                raise InsufficientScope()
            return await handler(*args, **kwargs)

        mark_requires_credentials(wrapper)
        document_auth(wrapper, AuthDoc((BEARER, COOKIE), required))
        return wrapper

    return decorator


def requires_session(
    handler: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Refuse the request with 401 unless it carries a live session cookie.

    For routes about the cookie session itself (log out); state-changing methods
    are also checked for cross-site origin (S11). Combining it with
    `http_cache(public=True)` raises at import time (S22).
    """

    @wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        principal = await current_principal()
        if principal is None:
            raise NotAuthenticated()
        g.keystile_principal = principal
        if request.method not in _SAFE_METHODS:
            check_same_origin()
        return await handler(*args, **kwargs)

    mark_requires_credentials(wrapper)
    document_auth(wrapper, AuthDoc((COOKIE,)))
    return wrapper


def start_cookie_session(session_id: str) -> None:
    """Send the session id in the signed quart-auth cookie (never the user id, S7)."""
    login_user(AuthUser(session_id))


def end_cookie_session() -> None:
    """Tell the browser to drop the cookie; the server-side revocation is the service's job."""
    logout_user()
