"""Pages of the second factor: /login/mfa, and the account page's two-factor section."""

from __future__ import annotations

from uuid import UUID

from markupsafe import Markup
from quart import Response, redirect, request, url_for
from quart.typing import ResponseReturnValue
from quart_schema import hide

from keystile.errors import (
    FactorRequired,
    InvalidInput,
    InvalidMfaCode,
    InvalidMfaToken,
    KeystileError,
    MfaRequired,
    ReauthenticationRequired,
)
from keystile.services.types import Principal
from keystile.web.auth import current_principal, recently_authenticated, start_cookie_session
from keystile.web.context import client_info, services
from keystile.web.csrf import verify_csrf
from keystile.web.pages.common import (
    NOTICES,
    account_error,
    account_page,
    blueprint,
    error_status,
    reauth_redirect,
    recent_principal,
    render_page,
    session_ended,
)
from keystile.web.redirects import safe_next

__all__ = ["mfa_step_page"]


async def mfa_step_page(required: MfaRequired, next_path: str) -> Response:
    """Answer a password login that needs a second factor with the /login/mfa form.

    The form is the answer to the POST itself: the mfa_token travels in a hidden
    field, never in a URL (logs, Referer) or a cookie.
    """
    return await render_page(
        "login_mfa.html",
        mfa_token=required.mfa_token,
        next_path=next_path,
        passkey="passkey" in required.factors,
    )


@blueprint.get("/login/mfa")
@hide
async def login_mfa() -> ResponseReturnValue:
    """Only reached by the password step's answer; a bare visit starts over at /login."""
    return redirect(url_for("pages.login"), 303)


@blueprint.post("/login/mfa")
@hide
async def login_mfa_submit() -> ResponseReturnValue:
    """Check the code of the second step, start the session, and go on (S42)."""
    form = await request.form
    await verify_csrf(form)
    next_path = safe_next(form.get("next"))
    token = form.get("mfa_token", "")[:128]
    code = form.get("code", "").strip()
    client = client_info()
    try:
        if not code:
            raise InvalidMfaCode("Enter the code from your authenticator app or a recovery code.")
        digits = code.replace(" ", "")
        step = await services().mfa.complete(
            token,
            client,
            mode="session",
            code=digits if digits.isdigit() else None,
            recovery_code=None if digits.isdigit() else code[:20],
        )
    except InvalidMfaToken:
        return redirect(url_for("pages.login", notice="mfa-expired", next=next_path), 303)
    except KeystileError as error:
        status, headers = error_status(error)
        response = await render_page(
            "login_mfa.html",
            status,
            mfa_token=token,
            next_path=next_path,
            errors={"code": error.message},
            passkey=True,
        )
        response.headers.update(headers)
        return response
    started = await services().auth.start_session(
        step.user, client, amr=step.amr, proved=step.event
    )
    start_cookie_session(started.session_id)
    return redirect(next_path, 303)


# --- the account page's "Two-factor authentication" section ---------------------------


@blueprint.post("/account/mfa/totp")
@hide
async def begin_totp() -> ResponseReturnValue:
    """Show a new authenticator-app secret as a QR code, to be confirmed with a code."""
    principal = await recent_principal()
    if not isinstance(principal, Principal):
        return principal
    try:
        setup = await services().factors.begin_totp(principal)
    except KeystileError as error:
        return await account_error(principal, error)
    return await account_page(
        principal,
        201,
        totp_setup=setup,
        totp_qr=Markup(setup.qr_svg),  # noqa: S704 (segno's SVG)
    )


@blueprint.post("/account/mfa/totp/confirm")
@hide
async def confirm_totp() -> ResponseReturnValue:
    """Confirm the authenticator app; show the recovery codes this once."""
    principal = await recent_principal()
    if not isinstance(principal, Principal):
        return principal
    code = (await request.form).get("code", "").strip()[:8]
    try:
        codes = await services().factors.confirm_totp(principal, code, client_info())
    except InvalidMfaCode as error:
        return await account_page(principal, 401, mfa_errors={"code": error.message})
    except KeystileError as error:
        return await account_error(principal, error)
    return await account_page(principal, 200, recovery_codes=codes, notice=NOTICES["mfa-enabled"])


@blueprint.post("/account/mfa/totp/remove")
@hide
async def remove_totp() -> ResponseReturnValue:
    """Remove the authenticator app (a current code; the last factor always needs one)."""
    principal = await current_principal()
    if principal is None:
        return session_ended()
    form = await request.form
    await verify_csrf(form)
    code = form.get("remove_code", "").strip()[:8] or None
    try:
        await services().factors.remove_totp(
            principal, client_info(), code=code, recent=recently_authenticated(principal)
        )
    except ReauthenticationRequired:
        return reauth_redirect()
    except (InvalidMfaCode, FactorRequired) as error:
        return await account_page(principal, 401, mfa_errors={"remove_code": error.message})
    except KeystileError as error:
        return await account_error(principal, error)
    return redirect(url_for("pages.account", notice="mfa-removed"), 303)


@blueprint.post("/account/mfa/recovery-codes")
@hide
async def regenerate_codes() -> ResponseReturnValue:
    """Replace the recovery codes and show the new ones this once."""
    principal = await recent_principal()
    if not isinstance(principal, Principal):
        return principal
    try:
        codes = await services().factors.regenerate_recovery_codes(principal, client_info())
    except KeystileError as error:
        return await account_error(principal, error)
    return await account_page(principal, 200, recovery_codes=codes)


# --- the account page's "Passkeys" section ---------------------------------------------


@blueprint.post("/account/passkeys/<uuid:passkey_id>/rename")
@hide
async def rename_passkey(passkey_id: UUID) -> ResponseReturnValue:
    """Rename one of my passkeys."""
    principal = await current_principal()
    if principal is None:
        return session_ended()
    form = await request.form
    await verify_csrf(form)
    name = form.get("name", "").strip()
    if not 1 <= len(name) <= 100 or not name.isprintable():
        error = InvalidInput("Name the passkey (up to 100 characters).")
        return await account_error(principal, error)
    try:
        await services().passkey_factors.rename(principal, passkey_id, name)
    except KeystileError as error:
        return await account_error(principal, error)
    return redirect(url_for("pages.account", notice="passkey-renamed"), 303)


@blueprint.post("/account/passkeys/<uuid:passkey_id>/delete")
@hide
async def delete_passkey(passkey_id: UUID) -> ResponseReturnValue:
    """Delete one of my passkeys (after a recent login)."""
    principal = await current_principal()
    if principal is None:
        return session_ended()
    await verify_csrf(await request.form)
    try:
        await services().passkey_factors.delete(
            principal, passkey_id, client_info(), recent=recently_authenticated(principal)
        )
    except ReauthenticationRequired:
        return reauth_redirect()
    except KeystileError as error:
        return await account_error(principal, error)
    return redirect(url_for("pages.account", notice="passkey-removed"), 303)
