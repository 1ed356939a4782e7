"""Rate limits on routes: the `rate_limited` decorator and the RateLimit-* headers (S27).

Headers follow the IETF draft "RateLimit header fields for HTTP" in its separate
form (draft-ietf-httpapi-ratelimit-headers-06 and earlier, as GitHub and
quart-rate-limiter send them), describing the tightest limit of the request:

    RateLimit-Limit: 10        requests allowed in a burst
    RateLimit-Remaining: 7     requests left now
    RateLimit-Reset: 18        seconds until the burst is whole again
    RateLimit-Policy: 10;w=60  the limit and its window in seconds

A refused request gets 429 `rate_limited` with Retry-After as well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar
from uuid import UUID

from quart import Response

from keystile.errors import RateLimited
from keystile.rates import Action
from keystile.web.context import (
    client_info,
    note_rate_limit,
    note_refused_limit,
    request_state,
    services,
)
from keystile.web.openapi import note_errors

__all__ = [
    "check_rate_limit",
    "note_rate_limit",
    "note_refused_limit",
    "rate_limit_headers",
    "rate_limited",
]

P = ParamSpec("P")
R = TypeVar("R")

AccountOf = Callable[..., str | UUID | None]


def rate_limited(
    action: Action, *, account: AccountOf | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Charge each request to the route's limits for `action` (settings `rate_limit_<action>_*`).

    `account` receives the handler's keyword arguments (e.g. the validated `data`)
    and returns the account to count under: an email, a user id, or None. Put the
    decorator under `validate_request` (so `data` exists) and under
    `requires_session` when the account is the caller.

        @blueprint.post("/v1/sessions")
        @validate_request(LoginRequest)
        @rate_limited(Action.LOGIN, account=lambda data: data.email)
        async def login(data: LoginRequest) -> ...
    """

    def decorator(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(handler)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            await check_rate_limit(action, account(**kwargs) if account is not None else None)
            return await handler(*args, **kwargs)

        note_errors(wrapper, 429)
        return wrapper

    return decorator


async def check_rate_limit(action: Action, account: str | UUID | None = None) -> None:
    """Charge this request to `action`'s limits or raise `RateLimited`; headers follow.

    For handlers that learn the account only inside (HTML forms).
    """
    try:
        request_state().rate_limit = await services().limits.check(action, client_info(), account)
    except RateLimited as exc:
        request_state().rate_limit = exc.status
        raise


def rate_limit_headers(response: Response) -> None:
    """Describe the tightest limit of a rate-limited route on its response."""
    status = request_state().rate_limit
    if status is not None:
        response.headers["RateLimit-Limit"] = str(status.limit)
        response.headers["RateLimit-Remaining"] = str(status.remaining)
        response.headers["RateLimit-Reset"] = str(status.reset_after)
        response.headers["RateLimit-Policy"] = f"{status.limit};w={status.period}"
