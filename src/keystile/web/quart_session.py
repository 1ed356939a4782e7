"""Quart's own cookie session, switched off: keystile keeps no data in it.

A keystile session is a row in PostgreSQL named by quart-auth's cookie; CSRF tokens are
derived from it (web/csrf.py). Quart would still open its signed cookie session on
every request and consider saving it after every response: building the signing
serializer, parsing cookies, serialising an empty dict (5 % of GET /v1/me's samples,
bench/README.md). This interface hands out one empty, read-only session instead, so
code that reads `session` (the public-response check in web/caching.py) keeps working,
and code that tries to store something in it is told where state belongs.
"""

from __future__ import annotations

from typing import Any, NoReturn

from flask.sessions import NullSession
from quart import Quart
from quart.sessions import SecureCookieSessionInterface
from quart.wrappers import BaseRequestWebsocket

__all__ = ["NoCookieSession", "NoCookieSessionInterface"]


class NoCookieSession(NullSession):
    """An empty session that refuses writes with a message that says why."""

    def _refuse(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        raise RuntimeError(
            "keystile keeps no data in Quart's cookie session; keep per-user state "
            "server-side (a table or Redis keyed by the principal's user id)."
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _refuse


class NoCookieSessionInterface(SecureCookieSessionInterface):
    """Open no cookie session and save none (Quart skips saving a null session)."""

    null_session_class = NoCookieSession

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> NoCookieSession:
        return NoCookieSession()
