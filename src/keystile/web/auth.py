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
from datetime import UTC, datetime
from functools import wraps
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

from quart import request
from quart_auth import AuthUser, login_user, logout_user

from keystile.errors import (
    CsrfRejected,
    InsufficientScope,
    InvalidToken,
    NotAuthenticated,
    ReauthenticationRequired,
    RoleRequired,
    UserRequired,
)
from keystile.services.roles import ADMIN_ROLE
from keystile.services.types import Principal
from keystile.web.caching import mark_requires_credentials
from keystile.web.context import request_state, services
from keystile.web.openapi import BEARER, COOKIE, AuthDoc, document_auth
from keystile.web.session_cookie import cookie_session_id

__all__ = [
    "authenticate_request",
    "check_same_origin",
    "current_principal",
    "end_cookie_session",
    "get_principal",
    "mark_auth_dependent",
    "recently_authenticated",
    "requires_admin",
    "requires_auth",
    "requires_recent_auth",
    "requires_role",
    "requires_session",
    "start_cookie_session",
]

P = ParamSpec("P")
R = TypeVar("R")

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ROLES = "_keystile_required_roles"


def mark_auth_dependent() -> None:
    """Record that the response depends on the caller's credentials (for Vary, S21)."""
    request_state().auth_dependent = True


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
    state = request_state()
    if state.session_resolved:
        return state.session_principal
    state.auth_dependent = True
    principal = None
    session_id = cookie_session_id()
    if session_id is not None:
        try:
            principal = await services().sessions.authenticate(session_id)
        except NotAuthenticated:
            principal = None
    state.session_principal, state.session_resolved = principal, True
    return principal


async def authenticate_request() -> Principal | None:
    """Return the caller from its bearer token, else its session cookie, else None.

    A bearer token that is present but bad raises (`InvalidToken`, `TokenExpired`,
    `TokenRevoked`) instead of falling back to the cookie, so the client learns why;
    catch `AuthError` where authentication is optional.
    """
    state = request_state()
    if state.principal_resolved:
        return state.principal
    state.auth_dependent = True
    token = _bearer_token()
    if token is not None:
        # An access token, a client-credentials token or an API key (`ks_pat_...`).
        principal: Principal | None = await services().machine.authenticate_bearer(token)
    else:
        principal = await current_principal()
    state.principal, state.principal_resolved = principal, True
    return principal


def get_principal() -> Principal:
    """Return the caller inside a handler guarded by `requires_auth` or `requires_session`."""
    principal = request_state().principal
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
    *, scopes: Iterable[str] = (), clients: bool = False
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Refuse the request with 401 unless it carries a valid bearer token or session cookie.

    A bearer credential (access token, API key, client-credentials token) must grant
    every scope in `scopes` (else 403 `insufficient_scope`, S44); a cookie session,
    being a full first-party login, grants every configured scope. A client-credentials
    token acts for no user, so it is refused (403 `user_required`) unless `clients=True`
    says the route serves machines too; there `get_principal().client_id` is set.
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
            if principal.via == "session":
                if request.method not in _SAFE_METHODS:
                    check_same_origin()
                granted = frozenset(services().settings.tokens.scopes)
            else:
                if principal.client_id is not None and not clients:
                    raise UserRequired()
                granted = principal.scopes
            if not required <= granted:
                raise InsufficientScope()
            return await handler(*args, **kwargs)

        mark_requires_credentials(wrapper)
        # OpenAPI: the scopes a bearer credential needs, and the roles (from
        # `requires_role` underneath) either kind of caller needs.
        roles = frozenset(getattr(handler, _ROLES, ()))
        document_auth(wrapper, AuthDoc((BEARER, COOKIE), required, roles))
        return wrapper

    return decorator


def requires_role(
    *roles: str,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Refuse with 403 `role_required` unless the caller's user has every one of `roles`.

    Put it under `requires_auth`. The user's live roles are checked (from the
    token-epoch cache, no I/O when warm), not those a token was issued with, so a
    removed role stops working at once. A client-credentials token has no roles.
    """
    needed = frozenset(roles)

    def decorator(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(handler)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = get_principal()
            if principal.client_id is not None:
                raise RoleRequired()
            if not needed <= await services().machine.roles.roles_of(principal.user_id):
                raise RoleRequired()
            return await handler(*args, **kwargs)

        setattr(wrapper, _ROLES, needed | getattr(handler, _ROLES, frozenset()))
        return wrapper

    return decorator


def requires_recent_auth(
    handler: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Refuse with 401 `reauthentication_required` unless the caller proved a password lately.

    "Lately" is `reauth_max_age_seconds`: the session's start, or the password grant
    behind a bearer token (`auth_time`, kept across refreshes). API keys and client
    tokens never qualify. Put it under `requires_auth` (S45).
    """

    @wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if not recently_authenticated(get_principal()):
            raise ReauthenticationRequired(services().settings.machine.reauth_max_age_seconds)
        return await handler(*args, **kwargs)

    return wrapper


def recently_authenticated(principal: Principal) -> bool:
    """Return True if the caller logged in within `reauth_max_age_seconds` (step-up, S42)."""
    max_age = services().settings.machine.reauth_max_age_seconds
    auth_time = principal.auth_time
    return auth_time is not None and (datetime.now(UTC) - auth_time).total_seconds() <= max_age


def requires_admin(
    handler: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """`requires_role("admin")` and `requires_recent_auth`: the admin API's guard (S45).

    Put it under `requires_auth()`. A non-admin gets 403 whatever its login's age.
    """
    return requires_role(ADMIN_ROLE)(requires_recent_auth(handler))


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
        state = request_state()
        state.principal, state.principal_resolved = principal, True
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
