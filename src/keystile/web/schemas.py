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
    "RegisterRequest",
    "SessionListResponse",
    "SessionResponse",
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
