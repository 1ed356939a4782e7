"""Request and response bodies of the JSON API (validated by quart-schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from keystile.services.password_policy import CONTROL_CHARACTERS

__all__ = [
    "AcceptedResponse",
    "Email",
    "ErrorBody",
    "ErrorResponse",
    "LoginRequest",
    "LoginResponse",
    "MeResponse",
    "NewPassword",
    "Password",
    "PasswordChangeRequest",
    "RefreshRequest",
    "RefreshToken",
    "RegisterRequest",
    "RevokeRequest",
    "SessionListResponse",
    "SessionResponse",
    "TokenRequest",
    "TokenResponse",
    "UserResponse",
]

_NO_CONTROL = f"^[^{CONTROL_CHARACTERS}]*$"

# Unicode white space and control characters, spelled out: `\s` means different things
# to pydantic (Rust), Python and the ECMAScript regexes of OpenAPI tools, and the
# document must refuse exactly what the server refuses.
_NOT_IN_EMAIL = r"@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
Email = Annotated[
    str,
    StringConstraints(
        min_length=3,
        max_length=320,
        pattern=rf"^[^{_NOT_IN_EMAIL}]+@[^{_NOT_IN_EMAIL}]+$",
    ),
    Field(description="An email address: name@domain.", examples=["ada@example.com"]),
]
# No password is longer than S1's hard maximum, so none longer is worth reading; the
# policy (S1) still judges length after NFKC against the configured maximum.
PASSWORD_MAX_LENGTH = 1024
# A password at login: any length an existing account may have (legacy imports too).
Password = Annotated[
    str,
    StringConstraints(min_length=1, max_length=PASSWORD_MAX_LENGTH, pattern=_NO_CONTROL),
    Field(examples=["correct horse battery staple"]),
]
# A new password: the policy's minimum is 8 or more (settings), never less.
NewPassword = Annotated[
    str,
    StringConstraints(min_length=8, max_length=PASSWORD_MAX_LENGTH, pattern=_NO_CONTROL),
    Field(
        description="8 to 1024 characters (the deployment may ask for more); "
        "not one of the most common passwords.",
        examples=["correct horse battery staple"],
    ),
]


# Opaque refresh tokens are base64url; anything else cannot be one of ours.
RefreshToken = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
]
Scope = Annotated[str, StringConstraints(max_length=1024, pattern=r"^[\x20-\x7e]*$")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class RegisterRequest(_Request):
    email: Email
    password: NewPassword


class LoginRequest(_Request):
    email: Email
    password: Password


class PasswordChangeRequest(_Request):
    current_password: Password
    new_password: NewPassword


class TokenRequest(_Request):
    """The password grant; `scope` (space-separated) defaults to every configured scope."""

    email: Email
    password: Password
    scope: Scope | None = None


class RefreshRequest(_Request):
    refresh_token: RefreshToken


class RevokeRequest(_Request):
    """Revoke one refresh token, or (`family: true`) every token of its login."""

    refresh_token: RefreshToken
    family: StrictBool = False  # `0` or `"yes"` is not an answer to a yes/no question


class TokenResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    scope: str


class UserResponse(BaseModel):
    id: UUID
    email: str


class LoginResponse(BaseModel):
    user: UserResponse
    expires_in: int


class AcceptedResponse(BaseModel):
    status: str
    message: str


class MeResponse(BaseModel):
    id: UUID
    email: str
    email_verified: bool
    authenticated_via: str


class SessionResponse(BaseModel):
    id: UUID
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    device: str
    ip: str
    current: bool


class SessionListResponse(BaseModel):
    sessions: list[SessionResponse]


class ErrorBody(BaseModel):
    code: str
    message: str
    fields: list[dict[str, str]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
