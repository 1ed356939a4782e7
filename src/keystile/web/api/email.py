"""Email flows over the API: password reset, email verification, email change and its undo.

Answers that mail a link to an address the caller names are 202 with the same
body whether or not the address has an account (S35). Tokens travel in JSON
bodies, never in URLs of the API (S18).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from quart import Blueprint, request
from quart_schema import (
    RequestSchemaValidationError,
    document_request,
    validate_request,
    validate_response,
)

from keystile.errors import NotAuthenticated
from keystile.web.auth import (
    authenticate_request,
    check_same_origin,
    get_principal,
    requires_auth,
    requires_recent_auth,
)
from keystile.web.context import client_info, services
from keystile.web.openapi import body_optional, may_fail
from keystile.web.schemas import AcceptedResponse, Email, Password

__all__ = [
    "EmailChangeRequest",
    "EmailVerificationRequest",
    "LinkToken",
    "LinkTokenRequest",
    "PasswordResetConfirmRequest",
    "PasswordResetRequest",
    "blueprint",
]

blueprint = Blueprint("email", __name__)

# Link tokens are 43 base64url characters; anything else cannot be one of ours.
LinkToken = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class PasswordResetRequest(_Request):
    email: Email


class PasswordResetConfirmRequest(_Request):
    token: LinkToken
    new_password: Password


class EmailVerificationRequest(_Request):
    """Only without authentication: the address of the account to mail a new link to."""

    email: Email | None = None


class LinkTokenRequest(_Request):
    token: LinkToken


class EmailChangeRequest(_Request):
    new_email: Email
    current_password: Password


RESET_ACCEPTED = "If an account has this address, a link to reset its password is on its way."
VERIFICATION_ACCEPTED = (
    "If this account's address is not confirmed yet, a new confirmation link is on its way."
)
CHANGE_ACCEPTED = (
    "A confirmation link is on its way to the new address; the address changes when it is followed."
)


@blueprint.post("/v1/password-resets")
@may_fail(429)  # the per-address limit (the per-account one answers 202 as ever, S35)
@validate_request(PasswordResetRequest)
@validate_response(AcceptedResponse, 202)
async def request_password_reset(data: PasswordResetRequest) -> tuple[AcceptedResponse, int]:
    """Mail a password reset link; 202 and the same body for every address (S35)."""
    await services().mail.flows.request_password_reset(data.email, client_info())
    return AcceptedResponse(status="accepted", message=RESET_ACCEPTED), 202


@blueprint.post("/v1/password-resets/confirm")
@validate_request(PasswordResetConfirmRequest)
async def confirm_password_reset(data: PasswordResetConfirmRequest) -> tuple[str, int]:
    """Set a new password with a reset token; every session and token family ends (S37).

    400 `invalid_token` for any bad token; 422 `weak_password` for a weak password.
    """
    await services().mail.flows.confirm_password_reset(data.token, data.new_password, client_info())
    return "", 204


@blueprint.post("/v1/email-verifications")
@may_fail(401, 403, 429)  # 401: no login and no email; 403: a cross-site cookie request
@body_optional
@document_request(EmailVerificationRequest)
@validate_response(AcceptedResponse, 202)
async def request_email_verification() -> tuple[AcceptedResponse, int]:
    """Mail a new confirmation link: to the caller if authenticated (no body needed), else
    to the unconfirmed account of `{"email": ...}`, with the same answer for every address.
    """
    principal = await authenticate_request()
    flows = services().mail.flows
    data = await _optional_body(EmailVerificationRequest)  # a body, if sent, must be valid
    if principal is not None:
        if principal.via == "session":
            check_same_origin()
        await flows.resend_verification(principal, client_info())
    else:
        if data.email is None:
            raise NotAuthenticated("Log in, or send the email address of the account.")
        await flows.resend_verification_to(data.email, client_info())
    return AcceptedResponse(status="accepted", message=VERIFICATION_ACCEPTED), 202


@blueprint.post("/v1/email-verifications/confirm")
@validate_request(LinkTokenRequest)
async def confirm_email_verification(data: LinkTokenRequest) -> tuple[str, int]:
    """Confirm an address (or a new one, which then becomes the account's) with a link token.

    A caller that is logged in may only use its own account's tokens.
    """
    principal = await authenticate_request()
    await services().mail.flows.confirm_email(data.token, client_info(), principal)
    return "", 204


@blueprint.post("/v1/me/email")
@may_fail(429)  # the per-address and per-account limits of email changes
@requires_auth()
@requires_recent_auth
@validate_request(EmailChangeRequest)
@validate_response(AcceptedResponse, 202)
async def request_email_change(data: EmailChangeRequest) -> tuple[AcceptedResponse, int]:
    """Ask to change the address: it changes once the link mailed to the new one is followed."""
    await services().mail.flows.request_email_change(
        get_principal(), data.new_email, data.current_password, client_info()
    )
    return AcceptedResponse(status="accepted", message=CHANGE_ACCEPTED), 202


@blueprint.post("/v1/email-changes/undo")
@validate_request(LinkTokenRequest)
async def undo_email_change(data: LinkTokenRequest) -> tuple[str, int]:
    """Put the old address back with the link mailed to it; every session and token ends."""
    await services().mail.flows.undo_email_change(data.token, client_info())
    return "", 204


async def _optional_body(model: type[EmailVerificationRequest]) -> EmailVerificationRequest:
    raw = await request.get_data(as_text=False)
    if not raw.strip():
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise RequestSchemaValidationError(error) from None
