"""Request and response bodies of the JSON API (validated by quart-schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, StringConstraints

__all__ = [
    "AcceptedResponse",
    "Email",
    "ErrorBody",
    "ErrorResponse",
    "LoginRequest",
    "LoginResponse",
    "MeResponse",
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

_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"

Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=3,
        max_length=320,
        pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$",
    ),
]
# The policy (S1) judges length after NFKC; this bound only keeps huge inputs out cheaply.
Password = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=_NO_CONTROL)]


# Opaque refresh tokens are base64url; anything else cannot be one of ours.
RefreshToken = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
]
Scope = Annotated[str, StringConstraints(max_length=1024, pattern=r"^[\x20-\x7e]*$")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class RegisterRequest(_Request):
    email: Email
    password: Password


class LoginRequest(_Request):
    email: Email
    password: Password


class PasswordChangeRequest(_Request):
    current_password: Password
    new_password: Password


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
    family: bool = False


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
