"""How handlers reach the composition root and the caller's identity."""

from __future__ import annotations

from quart import current_app, request

from keystile.bootstrap import Services
from keystile.services.types import ClientInfo

__all__ = ["client_info", "client_ip", "services"]

EXTENSION_KEY = "keystile"


def services() -> Services:
    """Return this worker's services (built at startup by the composition root)."""
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def client_ip() -> str:
    """Return the client address, trusting X-Forwarded-For only through configured hops (S26).

    With N trusted proxies, the client is the Nth address from the right of the
    header: everything left of it was written by the client and may be forged.
    """
    hops = services().settings.trusted_proxy_hops
    remote = request.remote_addr or ""
    if hops == 0:
        return remote
    forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < hops:
        return forwarded[0] if forwarded else remote
    return forwarded[-hops]


def client_info() -> ClientInfo:
    """Return the caller's address and a bounded user agent string."""
    return ClientInfo(ip=client_ip(), user_agent=request.headers.get("User-Agent", "")[:256])
