"""One log line and one latency sample per request, and the X-Request-ID round trip.

`RequestObserver` is the one ASGI layer in front of Quart: it refuses over-long headers
(431, S24), hands password grants to `LoginRefusal` (their hash admission, and a
refusal's 503, without Quart, S5), times the request to the end of its response,
and adds X-Request-ID to the response, a 431 and a 503 included. Inside Quart,
`note_request` fills in what only the app knows: the route template that matched and
the user, if any. Nothing from the request's headers, body, cookies or query string is
logged (S18).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from hypercorn.typing import ASGIFramework
from quart import current_app, request

from keystile import metrics
from keystile.logs import REQUEST_ID
from keystile.web.context import EXTENSION_KEY, client_ip, request_state
from keystile.web.limits import headers_too_large, send_headers_too_large
from keystile.web.login_refusal import PATH as LOGIN_PATH
from keystile.web.login_refusal import LoginRefusal

__all__ = ["RequestObserver", "RequestRecord", "note_request", "request_id"]

_log = logging.getLogger("keystile.request")

RECORD_KEY = "keystile.request"
_HEADER = b"x-request-id"
# Bounded and inert: it is echoed in a header and written to logs.
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@+=-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNMATCHED = "<unmatched>"


@dataclass(slots=True)
class RequestRecord:
    """What the log line and the metrics say about one request."""

    request_id: str
    route: str | None = None
    user_id: str | None = None
    client: str | None = None


def _incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == _HEADER and _SAFE_REQUEST_ID.fullmatch(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


class RequestObserver:
    """ASGI middleware: header limit, request id, latency by route and status, request log.

    One layer rather than one per concern: each layer costs every request a coroutine
    and a wrapped `send`.
    """

    def __init__(
        self,
        app: ASGIFramework,
        max_header_bytes: int,
        *,
        login_refusal: LoginRefusal | None = None,
    ) -> None:
        self._app = app
        self._max_header_bytes = max_header_bytes
        self._login_refusal = login_refusal

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        record = RequestRecord(_incoming_request_id(scope["headers"]))
        scope[RECORD_KEY] = record
        token = REQUEST_ID.set(record.request_id)
        status: int | None = None
        header = (_HEADER, record.request_id.encode("ascii"))

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        started = time.perf_counter()
        metrics.HTTP_REQUESTS_IN_PROGRESS.inc()
        try:
            if headers_too_large(scope["headers"], self._max_header_bytes):
                await send_headers_too_large(send_with_id)
            elif self._login_refusal and (services := self._login_refusal.applies(scope)):
                refused_client = await self._login_refusal.handle(
                    services, scope, receive, send_with_id, self._app
                )
                if refused_client is not None:
                    record.route, record.client = LOGIN_PATH, refused_client
            else:
                await self._app(scope, receive, send_with_id)
        except BaseException:
            status = status or 500
            raise
        finally:
            metrics.HTTP_REQUESTS_IN_PROGRESS.dec()
            self._record(scope, record, status, time.perf_counter() - started)
            REQUEST_ID.reset(token)

    @staticmethod
    def _record(scope: Any, record: RequestRecord, status: int | None, duration: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        route = record.route or _UNMATCHED
        # 499: the client went away before any response started (nginx's convention).
        status_text = str(status or 499)
        metrics.request_duration(method, route, status_text).observe(duration)
        client = record.client or (scope.get("client") or ("",))[0]
        _log.info(
            "request",
            extra={
                "request_id": record.request_id,
                "method": method,
                "route": route,
                "status": status or 499,
                "duration_ms": round(duration * 1000, 3),
                "user_id": record.user_id,
                "client": client,
            },
        )


def request_id() -> str | None:
    """Return the current request's id (also in every log record made while handling it)."""
    return REQUEST_ID.get()


def note_request() -> None:
    """After each request inside Quart: record the matched route and the user, if any."""
    record = request.scope.get(RECORD_KEY)
    if not isinstance(record, RequestRecord):
        return
    if request.url_rule is not None:
        record.route = request.url_rule.rule
    if EXTENSION_KEY in current_app.extensions:
        record.client = client_ip()  # honours trusted_proxy_hops (S26)
    principal = request_state().principal
    if principal is not None:
        record.user_id = str(principal.user_id)
