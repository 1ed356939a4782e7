"""Admit cold password logins for hash capacity before Quart sees them (S5).

While a worker's hash threads are saturated, most of the password logins that arrive
get 503. Through Quart, each of those refusals pays for a request context, dispatch,
body validation, an error handler, after-request hooks and a response object, which is
most of what a warm login costs. `LoginRefusal` makes every password grant's admission
in `RequestObserver`, the ASGI layer in front of Quart, instead:

- it reads the JSON body and validates it with the endpoint's own model;
- it runs the login gate and the hash admission (`AuthService.admit_login`, one Redis
  call, no PostgreSQL);
- if the hash is refused, it sends the same 503 `overloaded` answer, Retry-After
  included, that Quart would have sent.

It does so for every password grant, not only those that arrive while hashing is
saturated: the logins of a burst all arrive before the first of them reaches its
admission (each waits for its gate's Redis call first), so judged on arrival they
would all go to Quart, and most would be refused there, late and at full cost.

Every other request goes on to Quart unchanged, the admission attached, so the handler
charges nothing twice: warm logins, admitted cold ones, and the gate's own refusals
(raised by the handler). A body it cannot read as a login also goes on unchanged, with
no admission, and Quart answers it as always. Only the API's password grant
(POST /v1/tokens) takes this path. Browser logins (/v1/sessions and the login page)
first check where the request came from, which needs Quart's request context.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from quart import Quart

from keystile.container import Services
from keystile.errors import InvalidInput, Overloaded
from keystile.rates import Action
from keystile.services.login_gate import LoginAdmission
from keystile.services.types import ClientInfo
from keystile.web.context import EXTENSION_KEY, client_address
from keystile.web.schemas import TokenRequest

__all__ = ["ADMISSION_KEY", "LoginRefusal", "admission_of"]

# Where the admission waits in the ASGI scope for the handler (`admission_of`).
ADMISSION_KEY = "keystile.login_admission"
PATH = "/v1/tokens"
# A password grant's body is far smaller (an email, a password, a scope); past this it
# is not read here, and Quart's own body limit answers it.
_MAX_BODY = 8 * 1024
_USER_AGENT = b"user-agent"


def admission_of(scope: Mapping[str, Any]) -> LoginAdmission | None:
    """Return the admission `LoginRefusal` made for this request, if it made one."""
    admission = scope.get(ADMISSION_KEY)
    return admission if isinstance(admission, LoginAdmission) else None


def _overloaded(error: Overloaded) -> tuple[list[tuple[bytes, bytes]], bytes]:
    # Byte for byte what `web.errors` answers: Quart's compact JSON and its newline,
    # no-store (S20), nosniff, and the turn the caller was given.
    body = (
        json.dumps({"error": {"code": error.code, "message": error.message}}, separators=(",", ":"))
        + "\n"
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"retry-after", str(error.retry_after).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    return headers, body


def _header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in headers if key.lower() == name]


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for key, value in headers:
        if key.lower() == b"content-type":
            mimetype = value.partition(b";")[0].strip().lower()
            return mimetype == b"application/json" or mimetype.endswith(b"+json")
    return False


class LoginRefusal:
    """Answer refused cold logins of POST /v1/tokens in the ASGI layer (see the module)."""

    def __init__(self, app: Quart) -> None:
        self._app = app

    def applies(self, scope: dict[str, Any]) -> Services | None:
        """Return the services if this request is a password grant (the only case this
        path handles) and the worker is serving; None otherwise."""
        if scope["path"] != PATH or scope["method"] != "POST":
            return None
        services: Services | None = self._app.extensions.get(EXTENSION_KEY)
        return services

    async def handle(
        self, services: Services, scope: dict[str, Any], receive: Any, send: Any, app: Any
    ) -> str | None:
        """Refuse the login (and return the client address it was counted under), or
        pass the request on to `app` with its admission; None when it was passed on."""
        received: list[dict[str, Any]] = []
        body = b""
        complete = False
        while len(body) <= _MAX_BODY:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                complete = True
                break
        replay = _replay(received, receive)
        client = self._client(services, scope)
        admission = None
        if complete and _is_json(scope["headers"]):
            try:
                admission = await self._admit(services, body, client)
            except Overloaded as refused:
                headers, answer = _overloaded(refused)
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": answer})
                return client.ip
        if admission is None:
            await app(scope, replay, send)
            return None
        scope[ADMISSION_KEY] = admission
        # A ticket the handler never reached (a validation difference, a client gone)
        # is released here; releasing it twice is harmless.
        with admission.ticket or contextlib.nullcontext():
            await app(scope, replay, send)
        return None

    @staticmethod
    async def _admit(services: Services, body: bytes, client: ClientInfo) -> LoginAdmission | None:
        try:
            data = TokenRequest.model_validate(json.loads(body))
            services.tokens.requested_scopes(data.scope)
            return await services.auth.admit_login(
                data.email, data.password, client, action=Action.TOKEN
            )
        except (ValueError, ValidationError, InvalidInput):
            # Not a login this path can judge: Quart answers it, from the start.
            return None

    @staticmethod
    def _client(services: Services, scope: dict[str, Any]) -> ClientInfo:
        serving = services.settings.serving
        hops = serving.trusted_proxy_hops
        header = serving.forwarded_header
        values = _header_values(scope["headers"], header.lower().encode()) if hops else []
        # As Quart reads it (its Remote-Addr), so both paths count the same address.
        remote = (scope.get("client") or ("<local>",))[0]
        user_agents = _header_values(scope["headers"], _USER_AGENT)
        user_agent = user_agents[0][:256] if user_agents else ""
        return ClientInfo(ip=client_address(remote, values, hops, header), user_agent=user_agent)


def _replay(received: list[dict[str, Any]], receive: Any) -> Any:
    pending = deque(received)

    async def replay() -> Any:
        if pending:
            return pending.popleft()
        return await receive()

    return replay
