"""Refuse over-long request headers before any handler runs (S24)."""

from __future__ import annotations

import json
from typing import Any

from hypercorn.typing import ASGIFramework

__all__ = ["HeaderLimitMiddleware"]

_BODY = json.dumps(
    {"error": {"code": "headers_too_large", "message": "The request headers are too large."}}
).encode()


class HeaderLimitMiddleware:
    """Answer 431 when the request headers add up to more than `max_bytes`."""

    def __init__(self, app: ASGIFramework, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) for name, value in scope["headers"])
            if size > self._max_bytes:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(_BODY)).encode()),
                            (b"cache-control", b"no-store"),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": _BODY})
                return
        await self._app(scope, receive, send)
