"""The /reauth page: prove it is you again without a new login (step-up, S42).

Sensitive account actions send a stale session here (`reauth_redirect`). The
password, a TOTP or recovery code, or a passkey (passkeys.js, through the JSON API)
refreshes the current session in place, and the browser goes back to `next`.
"""

from __future__ import annotations

from quart import Response, redirect, request, url_for
from quart.typing import ResponseReturnValue
from quart_schema import hide

from keystile.errors import InvalidInput, KeystileError
from keystile.services.types import Principal
from keystile.web.auth import current_principal
from keystile.web.context import client_info, services
from keystile.web.csrf import verify_csrf
from keystile.web.pages.common import blueprint, error_status, render_page
from keystile.web.redirects import safe_next

__all__ = ["reauth_page"]


async def reauth_page(
    principal: Principal, next_path: str, status: int = 200, **context: object
) -> Response:
    """Render /reauth with the factors the user can confirm with."""
    found = await services().factors.status(principal)
    return await render_page(
        "reauth.html",
        status,
        email=principal.email,
        next_path=next_path,
        totp=found.totp,
        passkey=found.passkeys > 0,
        **context,
    )


@blueprint.get("/reauth")
@hide
async def reauth() -> ResponseReturnValue:
    """Ask the logged-in user for the password (or a code, or a passkey) again."""
    next_path = safe_next(request.args.get("next"))
    principal = await current_principal()
    if principal is None:
        return redirect(url_for("pages.login", notice="session-ended", next=next_path), 303)
    return await reauth_page(principal, next_path)


@blueprint.post("/reauth")
@hide
async def reauth_submit() -> ResponseReturnValue:
    """Check the password or code, refresh this session, and go back to `next`."""
    form = await request.form
    await verify_csrf(form)
    next_path = safe_next(form.get("next"))
    principal = await current_principal()
    if principal is None:
        return redirect(url_for("pages.login", notice="session-ended", next=next_path), 303)
    password = form.get("password", "")[:1024]
    code = form.get("code", "").strip()[:20]
    field = "code" if code else "password"
    try:
        if code:
            digits = code.replace(" ", "")
            await services().reauth.with_code(
                principal,
                client_info(),
                code=digits if digits.isdigit() else None,
                recovery_code=None if digits.isdigit() else code,
            )
        elif password:
            await services().reauth.with_password(principal, password, client_info())
        else:
            raise InvalidInput("Enter your password.")
    except KeystileError as error:
        status, headers = error_status(error)
        response = await reauth_page(principal, next_path, status, errors={field: error.message})
        response.headers.update(headers)
        return response
    return redirect(next_path, 303)
