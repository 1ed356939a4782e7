"""Email pages: forgot password, reset password, confirm an address, undo an email change.

A page reached by a link in a mail shows a form that POSTs the token: a GET
never changes anything, as mail scanners follow links (S36). Pages that hold a
token send `Referrer-Policy: no-referrer`, so it never leaks to another site.
"""

from __future__ import annotations

import re

from quart import Response, redirect, request, url_for
from quart.typing import ResponseReturnValue

from keystile.errors import (
    InvalidCredentials,
    InvalidInput,
    InvalidLinkToken,
    KeystileError,
    PasswordPolicyViolation,
)
from keystile.services.email_flows import LinkKind
from keystile.services.types import Principal
from keystile.web.auth import current_principal, end_cookie_session
from keystile.web.context import client_info, services
from keystile.web.csrf import verify_csrf
from keystile.web.pages.common import (
    account_error,
    account_page,
    blueprint,
    check_email,
    error_status,
    recent_principal,
    render_page,
    session_ended,
)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _no_referrer(response: Response) -> Response:
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def _invalid_link(error: InvalidLinkToken | None = None) -> Response:
    message = (error or InvalidLinkToken()).message
    return _no_referrer(await render_page("link_invalid.html", 400, message=message))


async def _link_page(kind: LinkKind, template: str) -> Response:
    """GET of a mailed link: check the token without spending it, show the form that does."""
    token = request.args.get("token", "")
    record = None
    if _TOKEN.match(token):
        record = await services().mail.flows.check_link(kind, token)
    if record is None:
        return await _invalid_link()
    return _no_referrer(
        await render_page(
            template,
            token=token,
            address=record.email,
            account_email=record.user_email,
            changing=record.purpose == "change_email",
        )
    )


async def _form_error(template: str, error: KeystileError, **context: object) -> Response:
    status, headers = error_status(error)
    response = await render_page(template, status, form_error=error.message, **context)
    response.headers.update(headers)
    return response


# --- forgot password ---------------------------------------------------------------------


@blueprint.get("/forgot-password")
async def forgot_password() -> ResponseReturnValue:
    """Ask for the address to mail a reset link to."""
    return await render_page("forgot_password.html")


@blueprint.post("/forgot-password")
async def forgot_password_submit() -> ResponseReturnValue:
    """Mail a reset link; the answer is the same whether or not the address has an account."""
    form = await request.form
    await verify_csrf(form)
    email = form.get("email", "").strip()
    problem = check_email(email)
    if problem:
        return await render_page(
            "forgot_password.html", 422, email=email, errors={"email": problem}
        )
    try:
        await services().mail.flows.request_password_reset(email, client_info())
    except KeystileError as error:
        return await _form_error("forgot_password.html", error, email=email)
    return redirect(url_for("pages.login", notice="reset-sent"), 303)


# --- reset password ----------------------------------------------------------------------


@blueprint.get("/reset-password")
async def reset_password() -> ResponseReturnValue:
    """Show the new-password form for a live reset link (nothing is spent by looking)."""
    return await _link_page("reset", "reset_password.html")


@blueprint.post("/reset-password")
async def reset_password_submit() -> ResponseReturnValue:
    """Set the new password; every session of the account ends, this browser's included."""
    form = await request.form
    await verify_csrf(form)
    token = form.get("token", "")
    new = form.get("new_password", "")
    if not _TOKEN.match(token):
        return await _invalid_link()
    record = await services().mail.flows.check_link("reset", token)
    if record is None:
        return await _invalid_link()
    errors = {
        "new_password": None if new else "Choose a new password.",
        "new_password_confirm": (
            "The two new passwords are not the same."
            if new and form.get("new_password_confirm", "") != new
            else None
        ),
    }
    context = {"token": token, "account_email": record.user_email}
    if any(errors.values()):
        return _no_referrer(await render_page("reset_password.html", 422, errors=errors, **context))
    try:
        await services().mail.flows.confirm_password_reset(token, new, client_info())
    except InvalidLinkToken as error:
        return await _invalid_link(error)
    except PasswordPolicyViolation as error:
        errors["new_password"] = error.message
        return _no_referrer(await render_page("reset_password.html", 422, errors=errors, **context))
    except KeystileError as error:
        return _no_referrer(await _form_error("reset_password.html", error, **context))
    end_cookie_session()
    return redirect(url_for("pages.login", notice="password-reset"), 303)


# --- confirm an address --------------------------------------------------------------------


@blueprint.get("/verify-email")
async def verify_email() -> ResponseReturnValue:
    """Show the button that confirms an address (or a new one) for a live link."""
    return await _link_page("verify", "verify_email.html")


@blueprint.post("/verify-email")
async def verify_email_submit() -> ResponseReturnValue:
    """Confirm the address; a logged-in browser must be the token's account."""
    form = await request.form
    await verify_csrf(form)
    token = form.get("token", "")
    if not _TOKEN.match(token):
        return await _invalid_link()
    principal = await current_principal()
    try:
        outcome = await services().mail.flows.confirm_email(token, client_info(), principal)
    except InvalidLinkToken as error:
        return await _invalid_link(error)
    notice = "email-changed" if outcome == "changed" else "email-verified"
    target = "pages.account" if principal is not None else "pages.login"
    return redirect(url_for(target, notice=notice), 303)


@blueprint.post("/verify-email/resend")
async def resend_verification() -> ResponseReturnValue:
    """Mail a new confirmation link to an unconfirmed account (from the login page)."""
    form = await request.form
    await verify_csrf(form)
    email = form.get("email", "").strip()
    if check_email(email) is None:
        try:
            await services().mail.flows.resend_verification_to(email, client_info())
        except KeystileError as error:
            return await _form_error("login.html", error, email=email, next_path="/account")
    return redirect(url_for("pages.login", notice="verification-sent"), 303)


@blueprint.post("/account/verify-email")
async def account_resend_verification() -> ResponseReturnValue:
    """Mail me a new confirmation link."""
    principal = await current_principal()
    if principal is None:
        return session_ended()
    await verify_csrf(await request.form)
    try:
        await services().mail.flows.resend_verification(principal, client_info())
    except KeystileError as error:
        return await account_error(principal, error)
    return redirect(url_for("pages.account", notice="verification-sent"), 303)


# --- change the address, and undo it -------------------------------------------------------


@blueprint.post("/account/email")
async def change_email() -> ResponseReturnValue:
    """Mail a confirmation link to the new address; it changes when that link is followed."""
    principal = await recent_principal()
    if not isinstance(principal, Principal):
        return principal
    form = await request.form
    new_email = form.get("new_email", "").strip()
    password = form.get("email_password", "")
    errors = {
        "new_email": check_email(new_email),
        "email_password": None if password else "Enter your password.",
    }
    if not any(errors.values()):
        try:
            await services().mail.flows.request_email_change(
                principal, new_email, password, client_info()
            )
        except InvalidCredentials as error:
            errors["email_password"] = error.message
        except InvalidInput as error:
            errors["new_email"] = error.message
        except KeystileError as error:
            return await account_error(principal, error)
        else:
            return redirect(url_for("pages.account", notice="email-change-sent"), 303)
    status = 401 if errors["email_password"] and password else 422
    return await account_page(principal, status, errors=errors, new_email=new_email)


@blueprint.get("/undo-email-change")
async def undo_email_change() -> ResponseReturnValue:
    """Show the button that puts the old address back, for a live undo link."""
    return await _link_page("undo", "undo_email_change.html")


@blueprint.post("/undo-email-change")
async def undo_email_change_submit() -> ResponseReturnValue:
    """Put the old address back; every session ends, this browser's included."""
    form = await request.form
    await verify_csrf(form)
    token = form.get("token", "")
    if not _TOKEN.match(token):
        return await _invalid_link()
    try:
        await services().mail.flows.undo_email_change(token, client_info())
    except InvalidLinkToken as error:
        return await _invalid_link(error)
    end_cookie_session()
    return redirect(url_for("pages.login", notice="email-change-undone"), 303)
