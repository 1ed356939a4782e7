"""The account page: who I am, my sessions, password change, logging out."""

from __future__ import annotations

from uuid import UUID

from quart import redirect, request, url_for
from quart.typing import ResponseReturnValue
from quart_schema import hide

from keystile.errors import InvalidCredentials, KeystileError, PasswordPolicyViolation
from keystile.rates import Action
from keystile.services.types import Principal
from keystile.web.auth import current_principal, end_cookie_session
from keystile.web.context import client_info, services
from keystile.web.csrf import verify_csrf
from keystile.web.pages.common import (
    account_error,
    account_page,
    blueprint,
    recent_principal,
    session_ended,
)
from keystile.web.rate_limits import check_rate_limit


@blueprint.get("/account")
@hide
async def account() -> ResponseReturnValue:
    """Show the account of the logged-in user; others are sent to log in first."""
    principal = await current_principal()
    if principal is None:
        return redirect(url_for("pages.login", next="/account"), 303)
    return await account_page(principal)


@blueprint.post("/account/password")
@hide
async def change_password() -> ResponseReturnValue:
    """Change the password; the user's other sessions end (S3)."""
    principal = await recent_principal()
    if not isinstance(principal, Principal):
        return principal
    form = await request.form
    current = form.get("current_password", "")
    new = form.get("new_password", "")
    errors = {
        "current_password": None if current else "Enter your current password.",
        "new_password": None if new else "Choose a new password.",
        "new_password_confirm": (
            "The two new passwords are not the same."
            if new and form.get("new_password_confirm", "") != new
            else None
        ),
    }
    if not any(errors.values()):
        try:
            await check_rate_limit(Action.PASSWORD_CHANGE, principal.user_id)
            await services().auth.change_password(principal, current, new, client_info())
        except InvalidCredentials as error:
            errors["current_password"] = error.message
        except PasswordPolicyViolation as error:
            errors["new_password"] = error.message
        except KeystileError as error:
            return await account_error(principal, error)
        else:
            return redirect(url_for("pages.account", notice="password-changed"), 303)
    status = 401 if errors["current_password"] and current else 422
    return await account_page(principal, status, errors=errors)


@blueprint.post("/account/sessions/<uuid:public_id>/revoke")
@hide
async def revoke_session(public_id: UUID) -> ResponseReturnValue:
    """End one of my sessions; ending this one logs me out here."""
    principal = await current_principal()
    if principal is None:
        return session_ended()
    await verify_csrf(await request.form)
    try:
        was_current = await services().auth.revoke_session(principal, public_id, client_info())
    except KeystileError as error:
        return await account_error(principal, error)
    if was_current:
        end_cookie_session()
        return redirect(url_for("pages.login", notice="logged-out"), 303)
    return redirect(url_for("pages.account", notice="session-revoked"), 303)


@blueprint.post("/account/logout-everywhere")
@hide
async def logout_everywhere() -> ResponseReturnValue:
    """End every session and access token of mine, this one included (S17)."""
    principal = await current_principal()
    if principal is None:
        return session_ended()
    await verify_csrf(await request.form)
    await services().auth.logout_everywhere(principal, client_info())
    end_cookie_session()
    return redirect(url_for("pages.login", notice="logged-out-everywhere"), 303)


@blueprint.post("/account/api-keys")
async def create_api_key() -> ResponseReturnValue:
    """Create an API key and show it this once (S43)."""
    principal = await current_principal()
    if principal is None:
        return session_ended()
    form = await request.form
    await verify_csrf(form)
    name = form.get("key_name", "").strip()
    scopes = form.getlist("key_scopes")
    days_text = form.get("key_expires_in_days", "").strip()
    max_days = services().settings.machine.api_key_max_days
    days = int(days_text) if days_text.isdigit() else 0
    errors = {
        "key_name": None if 1 <= len(name) <= 100 else "Name the key (up to 100 characters).",
        "key_scopes": None if scopes else "Choose at least one scope.",
        "key_expires_in_days": (
            None if 1 <= days <= max_days else f"Choose between 1 and {max_days} days."
        ),
    }
    if not any(errors.values()):
        try:
            created = await services().machine.api_keys.create(
                principal, name, scopes, days, client_info()
            )
        except KeystileError as error:
            return await account_error(principal, error)
        return await account_page(principal, 201, new_key=created)
    return await account_page(principal, 422, key_errors=errors)


@blueprint.post("/account/api-keys/<key_id>/revoke")
async def revoke_api_key(key_id: str) -> ResponseReturnValue:
    """Revoke one of my API keys."""
    principal = await current_principal()
    if principal is None:
        return session_ended()
    await verify_csrf(await request.form)
    try:
        await services().machine.api_keys.revoke(principal, key_id[:32], client_info())
    except KeystileError as error:
        return await account_error(principal, error)
    return redirect(url_for("pages.account", notice="api-key-revoked"), 303)
