"""Refuse over-long request headers before any handler runs (S24).

`RequestObserver` (the one ASGI layer keystile puts in front of Quart) asks
`headers_too_large` first and answers with `send_headers_too_large`, so even a 431 is
logged, timed and carries its X-Request-ID.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["headers_too_large", "send_headers_too_large"]

_BODY = json.dumps(
    {"error": {"code": "headers_too_large", "message": "The request headers are too large."}}
).encode()
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
    (b"cache-control", b"no-store"),
    (b"connection", b"close"),
]


def headers_too_large(headers: list[tuple[bytes, bytes]], max_bytes: int) -> bool:
    """True when the request's header names and values add up to more than `max_bytes`."""
    return sum(len(name) + len(value) for name, value in headers) > max_bytes


async def send_headers_too_large(send: Any) -> None:
    """Answer 431 `headers_too_large` and close the connection."""
    await send({"type": "http.response.start", "status": 431, "headers": list(_HEADERS)})
    await send({"type": "http.response.body", "body": _BODY})
