"""quart-auth, remembering the session cookies it has verified.

A session cookie carries the session id signed by itsdangerous (HMAC-SHA512 over the id
and a timestamp). Checking that signature on every request was the largest part of what
a cookie request costs beyond a bearer one (`python -m bench.profile_me --cookie`, about
45 of 470 µs per answer, bench/README.md). A cookie verified here is remembered under its
SHA-256 until the moment it expires (its timestamp plus quart-auth's `duration`), at
most `remember_seconds`; a cookie that fails the check is never remembered, so forged
cookies cost the full check every time and cannot crowd out real ones. What the cookie
names is still checked on every request: the session may have ended, gone idle or run
out its lifetime (`SessionService.authenticate`).

It also skips what quart-auth does on every request that keystile does not need:
building an exception for a request without a cookie, and resolving the user of a
request that never asked who it was, only to find that it did not log in or out.
`cookie_session_id` reads the session id of a request that did not log in or out
without quart-auth's user object (its `current_user` proxy, the lookup of the app's
extension, and its after-request hook that then finds nothing to write).
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import Any

from itsdangerous import BadSignature, SignatureExpired
from quart import Quart, Response, current_app, g, has_request_context, request
from quart_auth import QuartAuth, current_user

from keystile.secret_keys import note_fallback_used
from keystile.stores.cache import LocalCache

__all__ = ["SessionCookieAuth", "cookie_session_id"]

_EXTENSION = "keystile.session_cookie"


def cookie_session_id() -> str | None:
    """Return the session id of this request's cookie; None without a genuine one.

    What `quart_auth.current_user.auth_id` says: the user logged in or out during this
    request when that request did, else the id the request's cookie carries.
    """
    auth: SessionCookieAuth = current_app.extensions[_EXTENSION]
    if hasattr(g, auth.attribute_name):  # logged in or out (or resolved) in this request
        return current_user.auth_id
    return auth.load_cookie()


class SessionCookieAuth(QuartAuth):
    """`QuartAuth` whose `load_token` remembers the cookies it verified, until they expire."""

    def __init__(
        self,
        app: Quart | None = None,
        *,
        cookie_name: str,
        salt: str,
        remember_seconds: float = 300.0,
        max_remembered: int = 10_000,
        **options: Any,
    ) -> None:
        self._cookie_name = cookie_name
        self._salt = salt
        self._remember_seconds = remember_seconds
        # SHA-256 of a cookie -> (session id, the instant the cookie expires).
        self._verified: LocalCache[bytes, tuple[str, float]] = LocalCache(
            ttl=remember_seconds, max_entries=max_remembered
        )
        super().__init__(app, cookie_name=cookie_name, salt=salt, **options)

    def init_app(self, app: Quart) -> None:
        super().init_app(app)
        app.extensions[_EXTENSION] = self

    def load_cookie(self) -> str | None:
        """Return the session id of the request's cookie, or None (no cookie, or a bad one).

        quart-auth's own reads the cookie by item and catches the `KeyError`; werkzeug
        builds a `BadRequestKeyError` for every request without a cookie (bearer calls).
        """
        if not has_request_context():
            return super().load_cookie()  # a websocket: quart-auth's own way
        token = request.cookies.get(self._cookie_name)
        return None if token is None else self.load_token(token)

    async def after_request(self, response: Response) -> Response:
        """Write or delete the cookie if the request logged in or out; else leave it.

        quart-auth's own resolves the user of every request just to find it unchanged;
        one the request never asked about cannot have changed (logging in and out set it).
        """
        if not hasattr(g, self.attribute_name):
            return response
        return await super().after_request(response)

    def load_token(self, token: str, app: Quart | None = None) -> str | None:
        """Return the session id the cookie carries, or None if it is forged or expired."""
        key = hashlib.sha256(token.encode()).digest()
        now = time.time()
        remembered = self._verified.get(key)
        if remembered is not None and now <= remembered[1]:
            return remembered[0]
        app = app or current_app
        # The current key signs; a cookie signed under a previous one (secret_key_fallbacks)
        # still names its holder's session. Most cookies are checked under one key only.
        keys = [app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ())]
        loaded = None
        try:
            for index, secret in enumerate(keys):
                loaded = self._verify(token, secret)
                if loaded is not None:
                    if index:
                        note_fallback_used("session_cookie")
                    break
        except SignatureExpired:
            return None
        if loaded is None:
            return None
        auth_id, signed_at = loaded
        expires = float("inf") if self.duration is None else signed_at.timestamp() + self.duration
        lifetime = min(self._remember_seconds, expires - now)
        if lifetime > 0:
            self._verified.set(key, (auth_id, expires), ttl=lifetime)
        return str(auth_id)

    def _verify(self, token: str, key: str | bytes) -> tuple[Any, datetime] | None:
        """quart-auth's own check (QuartAuth.load_token) under one key, with the timestamp.

        None if `key` did not sign it; `SignatureExpired` if it did, too long ago.
        """
        serializer = self.serializer_class(key, self._salt)
        try:
            auth_id, signed_at = serializer.loads(
                token, max_age=self.duration, return_timestamp=True
            )
        except SignatureExpired:
            raise
        except BadSignature:
            return None
        return auth_id, signed_at
