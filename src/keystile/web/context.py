"""How handlers reach the composition root and the caller's identity."""

from __future__ import annotations

from quart import current_app, request

from keystile.container import Services
from keystile.services.types import ClientInfo

__all__ = ["client_info", "client_ip", "services"]

EXTENSION_KEY = "keystile"


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
    settings = services().settings
    hops = settings.serving.trusted_proxy_hops
    remote = request.remote_addr or ""
    if hops == 0:
        return remote
    if settings.serving.forwarded_header == "Forwarded":
        forwarded = _forwarded_for(request.headers.getlist("Forwarded"))
    else:
        values = ",".join(request.headers.getlist("X-Forwarded-For")).split(",")
        forwarded = [part.strip() for part in values if part.strip()]
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
