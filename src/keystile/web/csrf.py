"""CSRF tokens for the HTML forms (S11), in addition to the Origin/Sec-Fetch-Site check.

A signed double-submit token: a random nonce lives in its own cookie (HttpOnly,
SameSite=Lax, `__Host-` when secure) and every form carries
HMAC(key, nonce | session). Another site can neither read the nonce nor compute
the HMAC, and a token is bound to the session it was rendered for, so one taken
from the attacker's own session is worthless in the victim's. Being stateless,
it costs no storage and works on every worker.

Hand-written (some 60 lines) because the usual libraries (Flask-WTF, Quart-WTF)
bring a form framework and Quart's cookie session along with them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from quart import Response, after_this_request, current_app, request
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as WerkzeugResponse

from keystile.errors import CsrfRejected
from keystile.secret_keys import note_fallback_used
from keystile.web.auth import check_same_origin, current_principal
from keystile.web.context import request_state, services

__all__ = ["CSRF_FIELD", "csrf_cookie_name", "csrf_token", "verify_csrf"]

CSRF_FIELD = "csrf_token"
_NONCE_BYTES = 32
_FORM_EXPIRED = (
    "This form has expired or was sent from another site. Reload the page and try again."
)


def csrf_cookie_name(secure: bool) -> str:
    """`__Host-` keeps subdomains from planting a nonce of their choosing (S8)."""
    return "__Host-keystile_csrf" if secure else "keystile_csrf"


def _cookie_name() -> str:
    return csrf_cookie_name(services().settings.sessions.cookie_secure)


def _sign(nonce: str, session_id_hash: bytes | None, previous: bytes | None = None) -> str:
    """Return the token under the current key (the one to issue under), or `previous`."""
    secret = current_app.secret_key if previous is None else previous
    assert isinstance(secret, bytes)
    key = hmac.new(secret, b"keystile csrf", hashlib.sha256).digest()
    binding = b"" if session_id_hash is None else session_id_hash
    return hmac.new(key, nonce.encode() + b"|" + binding, hashlib.sha256).hexdigest()


def _valid_nonce(value: str | None) -> bool:
    return value is not None and 32 <= len(value) <= 64 and value.isascii()


async def csrf_token() -> str:
    """Return the token for this page's forms, setting the nonce cookie if there is none."""
    state = request_state()
    nonce = state.csrf_nonce or request.cookies.get(_cookie_name())
    if not _valid_nonce(nonce):
        nonce = secrets.token_urlsafe(_NONCE_BYTES)
        state.csrf_nonce = nonce
        secure = services().settings.sessions.cookie_secure

        @after_this_request
        async def _set_nonce(
            response: Response | WerkzeugResponse,
        ) -> Response | WerkzeugResponse:
            response.set_cookie(
                _cookie_name(), nonce, path="/", secure=secure, httponly=True, samesite="Lax"
            )
            return response

    assert nonce is not None
    principal = await current_principal()
    return _sign(nonce, None if principal is None else principal.session_id_hash)


async def verify_csrf(form: MultiDict[str, str]) -> None:
    """Raise `CsrfRejected` unless the form's token matches this browser and session."""
    check_same_origin()
    nonce = request.cookies.get(_cookie_name())
    supplied = form.get(CSRF_FIELD, "")
    if not _valid_nonce(nonce) or not supplied:
        raise CsrfRejected(_FORM_EXPIRED)
    assert nonce is not None
    principal = await current_principal()
    binding = None if principal is None else principal.session_id_hash
    if hmac.compare_digest(_sign(nonce, binding), supplied):
        return
    # A page rendered before the key was rotated: its token is under a previous key.
    for previous in current_app.config.get("SECRET_KEY_FALLBACKS") or ():
        if hmac.compare_digest(_sign(nonce, binding, previous), supplied):
            note_fallback_used("csrf")
            return
    raise CsrfRejected(_FORM_EXPIRED)
