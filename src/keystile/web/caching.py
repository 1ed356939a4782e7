"""`http_cache`: opt a route in to HTTP caching, safely (S20-S23; docs/architecture.md hot path 5).

Every response is `no-store` unless its handler opts in here (`default_cache_headers`,
an after-request hook, enforces that and adds `Vary` to credential-dependent responses).
A handler decorated with `http_cache` gets Cache-Control, a strong ETag computed from
its body (unless it supplied one), 304 answers to If-None-Match / If-Modified-Since,
Last-Modified when the handler knows it, and Surrogate-Key tags for purging a CDN or
Varnish by tag.

A public response is stored by shared caches and handed to everyone, so it must not
depend on the caller: `http_cache(public=True)` refuses to decorate a handler that
requires credentials (S22), and at request time refuses a response that sets a cookie
or whose handler looked at the caller's session or token (S21, S22). The 304 decision
is made on the handler's own response, after any authentication the handler runs,
so a conditional request never skips it (S23).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import Any, ParamSpec

from quart import Response, make_response, request, session
from quart.typing import ResponseReturnValue
from werkzeug.datastructures import Headers

from keystile.stores.purge import check_surrogate_key
from keystile.web.context import CacheHints, request_state
from keystile.web.openapi import responds

__all__ = [
    "CachePolicy",
    "CachePolicyError",
    "add_surrogate_keys",
    "add_vary",
    "cache_response",
    "default_cache_headers",
    "http_cache",
    "mark_requires_credentials",
    "pragma_no_cache",
    "set_etag",
    "set_last_modified",
]

P = ParamSpec("P")

_log = logging.getLogger(__name__)

_AUTH_VARY = ("Cookie", "Authorization")
# Directives that let a shared cache store a response (RFC 9111 3.5).
_SHARED_DIRECTIVES = ("public", "s-maxage")

_PUBLIC_ATTR = "_keystile_public_cache"
_CREDENTIALS_ATTR = "_keystile_requires_credentials"
_CREDENTIAL_HEADERS = frozenset({"cookie", "authorization"})
# Only a plain 200 is worth storing; errors keep the default no-store.
_CACHEABLE_STATUS = 200


class CachePolicyError(RuntimeError):
    """A route asked for caching that could leak one caller's response to another."""


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What `http_cache` sends; validated once, at decoration time."""

    public: bool
    max_age: int
    s_maxage: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    vary: tuple[str, ...] = ()
    surrogate_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_age", "s_maxage", "stale_while_revalidate", "stale_if_error"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"http_cache: {name} must not be negative")
        if not self.public and (self.s_maxage is not None or self.surrogate_keys):
            raise ValueError("http_cache: s_maxage and surrogate_keys need public=True")
        if self.public and _CREDENTIAL_HEADERS & {name.lower() for name in self.vary}:
            raise CachePolicyError(
                "http_cache: a public response must not vary on Cookie or Authorization (S22)"
            )
        for key in self.surrogate_keys:
            check_surrogate_key(key)

    def cache_control(self) -> str:
        """Return the Cache-Control header value."""
        parts = ["public" if self.public else "private", f"max-age={self.max_age}"]
        for directive, value in (
            ("s-maxage", self.s_maxage),
            ("stale-while-revalidate", self.stale_while_revalidate),
            ("stale-if-error", self.stale_if_error),
        ):
            if value is not None:
                parts.append(f"{directive}={value}")
        return ", ".join(parts)


def _hints() -> CacheHints:
    return request_state().cache


def add_surrogate_keys(*keys: str) -> None:
    """Tag this request's response for purge by tag (e.g. `product:42`)."""
    for key in keys:
        check_surrogate_key(key)
    _hints().surrogate_keys.extend(keys)


def set_last_modified(when: datetime) -> None:
    """Send Last-Modified (and answer If-Modified-Since) for this request's response."""
    _hints().last_modified = when


def set_etag(value: str) -> None:
    """Use this strong validator instead of a hash of the body (e.g. a row version)."""
    _hints().etag = value


def mark_requires_credentials(handler: Callable[P, Any]) -> None:
    """Record that `handler` authenticates its caller; refuse if it is publicly cached.

    Authentication decorators (`requires_session`, `requires_auth`) call this on the
    wrapper they return, so `http_cache(public=True)` above or below them fails at import.
    """
    if getattr(handler, _PUBLIC_ATTR, False):
        raise CachePolicyError(
            f"{handler.__qualname__}: a route that requires credentials cannot be cached "
            "publicly (S22); use http_cache(public=False)"
        )
    setattr(handler, _CREDENTIALS_ATTR, True)


def http_cache(
    *,
    public: bool,
    max_age: int,
    s_maxage: int | None = None,
    stale_while_revalidate: int | None = None,
    stale_if_error: int | None = None,
    vary: Iterable[str] = (),
    surrogate_keys: Iterable[str] = (),
) -> Callable[[Callable[P, Awaitable[Any]]], Callable[P, Awaitable[ResponseReturnValue]]]:
    """Make a GET route's successful responses cacheable, with validators and 304s.

    `public=True`: any cache may store it (CDN, Varnish), so the response must be the
    same for every caller. `public=False`: only the caller's browser may store it.
    `s_maxage` is the shared caches' lifetime; `surrogate_keys` tag every response of
    the route (add per-request tags with `add_surrogate_keys`). Only 200 responses are
    made cacheable; anything else keeps the default no-store.
    """
    policy = CachePolicy(
        public=public,
        max_age=max_age,
        s_maxage=s_maxage,
        stale_while_revalidate=stale_while_revalidate,
        stale_if_error=stale_if_error,
        vary=tuple(vary),
        surrogate_keys=tuple(surrogate_keys),
    )

    def decorator(
        handler: Callable[P, Awaitable[Any]],
    ) -> Callable[P, Awaitable[ResponseReturnValue]]:
        if policy.public and getattr(handler, _CREDENTIALS_ATTR, False):
            raise CachePolicyError(
                f"{handler.__qualname__}: a route that requires credentials cannot be "
                "cached publicly (S22); use http_cache(public=False)"
            )

        @wraps(handler)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
            # The handler (and any authentication it runs) always goes first, so a
            # conditional request cannot skip authentication (S23).
            response = await make_response(await handler(*args, **kwargs))
            if not isinstance(response, Response):
                return response
            return await cache_response(policy, response, route=handler.__qualname__)

        if policy.public:
            setattr(wrapper, _PUBLIC_ATTR, True)
        responds(304)(wrapper)
        return wrapper

    return decorator


async def cache_response(policy: CachePolicy, response: Response, *, route: str) -> Response:
    """Apply `policy` to a finished response; answer 304 if the caller already has it.

    What `http_cache` does after its handler, for handlers whose policy is only known
    at request time (e.g. lifetimes from settings). Call it with the handler's own
    response, after any authentication, so a conditional request never skips it (S23).
    Only a 200 to GET/HEAD is made cacheable; anything else keeps the default no-store.
    """
    if response.status_code != _CACHEABLE_STATUS or request.method not in {"GET", "HEAD"}:
        return response
    if policy.public:
        _refuse_caller_dependent(response, route)
    await _apply(policy, response)
    return await response.make_conditional(request)


def _refuse_caller_dependent(response: Response, route: str) -> None:
    if "Set-Cookie" in response.headers:
        raise CachePolicyError(f"{route}: a public response set a cookie (S22)")
    # Quart saves its own cookie session after every after_request hook, so a
    # Set-Cookie from it would only appear once this check is long past.
    if getattr(session, "accessed", False) or getattr(session, "modified", False):
        raise CachePolicyError(f"{route}: a public response used the cookie session (S22)")
    if request_state().auth_dependent:
        raise CachePolicyError(f"{route}: a public response read the caller's credentials (S21)")


async def _apply(policy: CachePolicy, response: Response) -> None:
    hints = _hints()
    response.headers["Cache-Control"] = policy.cache_control()
    for name in policy.vary:
        response.vary.add(name)
    keys = list(dict.fromkeys((*policy.surrogate_keys, *hints.surrogate_keys)))
    if keys:
        response.headers["Surrogate-Key"] = " ".join(keys)
    if hints.last_modified is not None:
        response.last_modified = hints.last_modified
    if hints.etag is not None:
        response.set_etag(hints.etag)
    elif "ETag" not in response.headers:
        body = await response.get_data(as_text=False)
        response.set_etag(hashlib.sha256(body).hexdigest()[:32])


def default_cache_headers(response: Response) -> None:
    """Default every response to no-store; mark credential-dependent ones (S20, S21).

    Called by keystile's after-request hook, which runs after QuartAuth's and so sees
    its Set-Cookie.
    """
    headers = response.headers
    # One pass over the names: werkzeug answers `in`, `get` and `setdefault` for a
    # missing header by raising and catching an exception, several per response.
    present = {name.lower() for name, _ in headers.items()}
    auth_dependent = request_state().auth_dependent
    if auth_dependent:
        add_vary(headers, _AUTH_VARY, present="vary" in present)
    if "cache-control" not in present:
        headers.add("Cache-Control", "no-store")
    elif "set-cookie" in present:
        headers["Cache-Control"] = "no-store"
    elif auth_dependent and _shared_cacheable(headers["Cache-Control"]):
        # A handler bug (http_cache refuses this earlier): never let a shared cache keep it.
        _log.error("caller-dependent response marked shared-cacheable; sent as no-store")
        headers["Cache-Control"] = "private, no-store"
        headers.pop("Surrogate-Key", None)
    if "x-content-type-options" not in present:
        headers.add("X-Content-Type-Options", "nosniff")


def add_vary(headers: Headers, names: tuple[str, ...], *, present: bool = True) -> None:
    """Add each of `names` to the Vary header once (case-insensitively); `*` stays `*`.

    `present=False` says the caller knows there is no Vary header yet.
    """
    # Edits the header text directly: werkzeug's `response.vary` re-parses it into a
    # callback-backed set on every access, which costs more than the rest of this hook.
    current = headers.get("Vary") if present else None
    if current is None:
        headers["Vary"] = ", ".join(names)
        return
    parts = {part.strip().lower() for part in current.split(",")}
    if "*" in parts:
        return
    missing = [name for name in names if name.lower() not in parts]
    if missing:
        headers["Vary"] = ", ".join([current, *missing])


def _shared_cacheable(cache_control: str) -> bool:
    directives = {part.strip().split("=")[0].lower() for part in cache_control.split(",")}
    if "no-store" in directives:
        return False
    return "private" not in directives or any(d in directives for d in _SHARED_DIRECTIVES)


def pragma_no_cache() -> Headers:
    """`Pragma: no-cache` for an answer that carries a token (RFC 6749 5.1: for HTTP/1.0
    caches too; `Cache-Control: no-store` is set for every private answer already).

    A `Headers` object rather than a dict: quart-schema converts a handler's dict of
    headers through a pydantic TypeAdapter it builds for every response (about 6 % of a
    cold login's event-loop time under py-spy), and passes `Headers` through as they are.
    """
    return Headers({"Pragma": "no-cache"})
