"""What every page shares: the blueprint, rendering, notices, error pages, headers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from quart import Blueprint, Response, redirect, render_template, request, url_for
from quart.typing import ResponseReturnValue

from keystile.errors import KeystileError
from keystile.services.types import Principal
from keystile.web.auth import current_principal, recently_authenticated
from keystile.web.context import note_refused_limit, services
from keystile.web.csrf import CSRF_FIELD, csrf_token, verify_csrf
from keystile.web.errors import status_for
from keystile.web.schemas import Email

__all__ = [
    "NOTICES",
    "account_error",
    "account_page",
    "blueprint",
    "check_email",
    "error_status",
    "reauth_redirect",
    "recent_principal",
    "render_page",
    "session_ended",
]

blueprint = Blueprint("pages", __name__, template_folder="../templates")

# Messages shown after a redirect, chosen by a fixed key: nothing from the URL is echoed.
NOTICES = {
    "registered": (
        "If this email was not registered yet, its account now exists. Log in to continue."
    ),
    "logged-out": "You are logged out.",
    "logged-out-everywhere": "You are logged out on every device.",
    "session-ended": "Your session has ended. Please log in again.",
    "password-changed": "Your password is changed. Your other sessions have ended.",
    "session-revoked": "That session has ended.",
    "api-key-revoked": "That API key is revoked; it stops working within seconds.",
    "reset-sent": (
        "If an account has this address, a link to reset its password is on its way. "
        "Check your mail."
    ),
    "password-reset": "Your password is changed and every device is logged out. Log in again.",
    "verification-sent": (
        "If the address is not confirmed yet, a new confirmation link is on its way."
    ),
    "email-verified": "Your email address is confirmed.",
    "email-changed": "Your new email address is confirmed and now belongs to your account.",
    "email-change-sent": (
        "A confirmation link is on its way to the new address. "
        "The address changes when you follow it."
    ),
    "reauth": "To do this, confirm it is you: it has been a while since you logged in.",
    "mfa-expired": "That sign-in took too long or was already completed. Log in again.",
    "mfa-enabled": (
        "Your authenticator app is set up. Keep the recovery codes below somewhere safe: "
        "they are shown only now."
    ),
    "passkey-added": "Your passkey is added. You can log in with it now.",
    "passkey-removed": "That passkey is deleted.",
    "passkey-renamed": "The passkey is renamed.",
    "mfa-removed": "Your authenticator app is removed; your password alone logs you in again.",
    "email-change-undone": (
        "Your old email address is back and every device is logged out. "
        "If someone else changed it, reset your password now."
    ),
}

# Scripts only from here (the passkey buttons' static file; never inline), fetches only
# here; forms post only here; no framing (clickjacking of the buttons).
_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_EMAIL = TypeAdapter(Email)


async def render_page(template: str, status: int = 200, **context: Any) -> Response:
    """Render a page with its CSRF token and the notice named in `?notice=`, if any."""
    context.setdefault("notice", NOTICES.get(request.args.get("notice", "")))
    body = await render_template(
        template, csrf_token=await csrf_token(), csrf_field=CSRF_FIELD, **context
    )
    return Response(body, status=status)


def reauth_redirect(next_path: str = "/account") -> ResponseReturnValue:
    """Send a logged-in user to /reauth, then back to `next_path` (step-up, S42).

    /reauth refreshes the current session in place: no second login, no new session.
    """
    return redirect(url_for("pages.reauth", next=next_path, notice="reauth"), 303)


def error_status(error: KeystileError) -> tuple[int, dict[str, str]]:
    """Return the status and extra headers a page answers a domain error with."""
    note_refused_limit(error)
    retry_after = getattr(error, "retry_after", None)
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return status_for(error), headers


def check_email(value: str) -> str | None:
    """Return an error message for an unusable email address, or None."""
    if not value:
        return "Enter your email address."
    try:
        _EMAIL.validate_python(value)
    except ValidationError:
        return "Enter an email address like name@example.com."
    return None


async def account_page(principal: Principal, status: int = 200, **context: object) -> Response:
    """Render the account page of `principal` with `context` (forms' errors, one-time values)."""
    sessions = await services().sessions.list_sessions(principal)
    api_keys = await services().machine.api_keys.list_keys(principal.user_id)
    settings = services().settings
    user = await services().users.select_user_by_email(principal.email)
    return await render_page(
        "account.html",
        status,
        principal=principal,
        sessions=sessions,
        api_keys=api_keys,
        key_scopes=settings.tokens.scopes,
        key_max_days=settings.machine.api_key_max_days,
        email_verified=user is not None and user.id == principal.user_id and user.email_verified,
        verification=settings.email.verification,
        mfa=await services().factors.status(principal),
        passkeys=await services().passkey_factors.list(principal),
        **context,
    )


async def account_error(principal: Principal, error: KeystileError) -> Response:
    """Render the account page with `error` as the form error, with its status."""
    status, headers = error_status(error)
    response = await account_page(principal, status, form_error=error.message)
    response.headers.update(headers)
    return response


def session_ended() -> ResponseReturnValue:
    """Send a visitor whose session is gone to log in, then back to the account page."""
    return redirect(url_for("pages.login", notice="session-ended", next="/account"), 303)


async def recent_principal() -> Principal | ResponseReturnValue:
    """Return the caller of a form post that needs a recent login (step-up, S42).

    Or the answer to give instead: to the login page if the session is gone, to log
    in again if the last login is too old. The form's CSRF token is checked (S11).
    """
    principal = await current_principal()
    if principal is None:
        return session_ended()
    await verify_csrf(await request.form)
    if not recently_authenticated(principal):
        return reauth_redirect()
    return principal


@blueprint.app_template_filter("when")
def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@blueprint.after_request
async def _page_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


@blueprint.errorhandler(KeystileError)
async def _error_page(error: KeystileError) -> Response:
    """Answer errors no form handled (CSRF, outages) with a page, not JSON."""
    status, headers = error_status(error)
    body = await render_template("error.html", message=error.message, status=status)
    return Response(body, status=status, headers=headers)
