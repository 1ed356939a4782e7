"""How handlers reach the composition root, the caller, and the request's own state.

Everything keystile keeps about the request in flight lives in one `RequestState`
on Quart's `g`, reached through `request_state()`: typed, and in one place, so no
module invents a `g` attribute of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from quart import current_app, g, request

from keystile.container import Services
from keystile.errors import KeystileError, LimitStatus
from keystile.services.types import ClientInfo, Principal

__all__ = [
    "CacheHints",
    "RequestState",
    "client_address",
    "client_info",
    "client_ip",
    "note_rate_limit",
    "note_refused_limit",
    "request_state",
    "services",
]

EXTENSION_KEY = "keystile"
_STATE = "keystile_request"


@dataclass(slots=True)
class CacheHints:
    """What a handler told `http_cache` about its response."""

    surrogate_keys: list[str] = field(default_factory=list)
    last_modified: datetime | None = None
    etag: str | None = None


@dataclass(slots=True)
class RequestState:
    """What keystile knows about the request in flight."""

    # The caller (bearer token or cookie), once a guard or `authenticate_request` ran.
    principal: Principal | None = None
    principal_resolved: bool = False
    # The caller by session cookie only (pages, CSRF), once looked up.
    session_principal: Principal | None = None
    session_resolved: bool = False
    # The response depends on the caller's credentials: never cache it for another (S21).
    auth_dependent: bool = False
    csrf_nonce: str | None = None
    rate_limit: LimitStatus | None = None
    cache: CacheHints = field(default_factory=CacheHints)


def request_state() -> RequestState:
    """Return this request's state, made on first use."""
    state: RequestState | None = g.get(_STATE)
    if state is None:
        state = RequestState()
        setattr(g, _STATE, state)
    return state


def note_rate_limit(status: LimitStatus | None) -> None:
    """Describe `status` (a limit a service charged) in this response's RateLimit-* headers."""
    request_state().rate_limit = status


def note_refused_limit(error: KeystileError) -> None:
    """For an error raised inside a service: describe the limit it was counted under."""
    if error.limit_status is not None and request_state().rate_limit is None:
        note_rate_limit(error.limit_status)


def services() -> Services:
    """Return this worker's services (built at startup by the composition root)."""
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def client_ip() -> str:
    """Return the client address, trusting proxy headers only through configured hops (S26).

    With N trusted proxies, the client is the Nth address from the right of the
    header: everything left of it was written by the client and may be forged.
    Only the header the proxies are configured to write (`forwarded_header`) is
    read; the other may come from the client and is ignored.
    """
    serving = services().settings.serving
    header = serving.forwarded_header
    values = request.headers.getlist(header) if serving.trusted_proxy_hops else []
    return client_address(request.remote_addr or "", values, serving.trusted_proxy_hops, header)


def client_address(remote: str, values: list[str], hops: int, header: str) -> str:
    """`client_ip` from its parts: the peer address and the `header` lines the proxies wrote.

    For callers outside a request context (the ASGI layer in front of Quart).
    """
    if hops == 0:
        return remote
    if header == "Forwarded":
        forwarded = _forwarded_for(values)
    else:
        parts = ",".join(values).split(",")
        forwarded = [part.strip() for part in parts if part.strip()]
    if len(forwarded) < hops:
        return forwarded[0] if forwarded else remote
    return forwarded[-hops]


def _forwarded_for(values: list[str]) -> list[str]:
    """Return the `for=` addresses of RFC 7239 Forwarded headers, in order.

    `for="[2001:db8::1]:4711"` becomes `2001:db8::1`, `for=192.0.2.60:80` becomes
    `192.0.2.60`; an element without `for=` counts as an unknown hop.
    """
    addresses = []
    for element in ",".join(values).split(","):
        node = "unknown"
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.strip().lower() == "for":
                node = value.strip().strip('"')
        if node.startswith("["):
            node = node[1:].partition("]")[0]
        elif node.count(":") == 1:
            node = node.partition(":")[0]
        addresses.append(node)
    return addresses


def client_info() -> ClientInfo:
    """Return the caller's address and a bounded user agent string."""
    return ClientInfo(ip=client_ip(), user_agent=request.headers.get("User-Agent", "")[:256])
