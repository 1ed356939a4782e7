"""Log in, register and log out with HTML forms (Post/Redirect/Get)."""

from __future__ import annotations

from quart import Response, redirect, request, url_for
from quart.typing import ResponseReturnValue
from quart_schema import hide

from keystile.errors import EmailNotVerified, KeystileError, MfaRequired, PasswordPolicyViolation
from keystile.rates import Action
from keystile.web.auth import current_principal, end_cookie_session, start_cookie_session
from keystile.web.context import client_info, services
from keystile.web.csrf import verify_csrf
from keystile.web.pages.common import blueprint, check_email, error_status, render_page
from keystile.web.pages.mfa import mfa_step_page
from keystile.web.rate_limits import check_rate_limit, note_rate_limit
from keystile.web.redirects import safe_next


@blueprint.get("/")
@hide
async def index() -> ResponseReturnValue:
    """Send people to their account (which sends them to log in if need be)."""
    return redirect(url_for("pages.account"), 303)


@blueprint.get("/login")
@hide
async def login() -> ResponseReturnValue:
    """Show the login form; a logged-in visitor goes straight on."""
    next_path = safe_next(request.args.get("next"))
    if await current_principal() is not None:
        # reauth=1 (older step-up links): confirm on /reauth, keeping this session.
        if request.args.get("reauth") == "1":
            return redirect(url_for("pages.reauth", next=next_path, notice="reauth"), 303)
        return redirect(next_path, 303)
    return await render_page("login.html", next_path=next_path)


@blueprint.post("/login")
@hide
async def login_submit() -> ResponseReturnValue:
    """Check the credentials, start a session, and go on to a same-site path (S12)."""
    form = await request.form
    await verify_csrf(form)  # also stops login CSRF: no other site may log a browser in
    next_path = safe_next(form.get("next"))
    email = form.get("email", "").strip()
    password = form.get("password", "")
    errors = {"email": check_email(email), "password": None if password else "Enter your password."}
    if any(errors.values()):
        return await render_page("login.html", 422, email=email, next_path=next_path, errors=errors)
    try:
        # The login's rate limits are charged inside, with its other checks (one Redis call).
        started = await services().auth.login(email, password, client_info())
    except MfaRequired as required:
        return await mfa_step_page(required, next_path)
    except KeystileError as error:
        return await _form_error(
            "login.html",
            error,
            email=email,
            next_path=next_path,
            unverified=isinstance(error, EmailNotVerified),
        )
    note_rate_limit(started.limits)
    start_cookie_session(started.session_id)
    return redirect(next_path, 303)


@blueprint.get("/register")
@hide
async def register() -> ResponseReturnValue:
    """Show the registration form."""
    return await render_page("register.html")


@blueprint.post("/register")
@hide
async def register_submit() -> ResponseReturnValue:
    """Register; the answer is the same whether or not the email had an account (S6)."""
    form = await request.form
    await verify_csrf(form)
    email = form.get("email", "").strip()
    password = form.get("password", "")
    errors = {
        "email": check_email(email),
        "password": None if password else "Choose a password.",
        "password_confirm": (
            "The two passwords are not the same."
            if password and form.get("password_confirm", "") != password
            else None
        ),
    }
    if any(errors.values()):
        return await render_page("register.html", 422, email=email, errors=errors)
    try:
        await check_rate_limit(Action.REGISTER, email)
        await services().auth.register(email, password, client_info())
    except PasswordPolicyViolation as error:
        errors["password"] = error.message
        return await render_page("register.html", 422, email=email, errors=errors)
    except KeystileError as error:
        return await _form_error("register.html", error, email=email)
    return redirect(url_for("pages.login", notice="registered"), 303)


@blueprint.post("/logout")
@hide
async def logout() -> ResponseReturnValue:
    """End this session on the server and drop the cookie (S9)."""
    principal = await current_principal()
    if principal is not None:
        await verify_csrf(await request.form)
        await services().auth.logout(principal, client_info())
    end_cookie_session()
    return redirect(url_for("pages.login", notice="logged-out"), 303)


async def _form_error(template: str, error: KeystileError, **context: object) -> Response:
    status, headers = error_status(error)
    response = await render_page(template, status, form_error=error.message, **context)
    response.headers.update(headers)
    return response
