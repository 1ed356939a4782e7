"""Request and response bodies of the API-key, OAuth and admin endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from keystile.services.paging import MAX_PAGE_SIZE

__all__ = [
    "AdminUserDetail",
    "AdminUserListQuery",
    "AdminUserListResponse",
    "AdminUserResponse",
    "ApiKeyCreateRequest",
    "ApiKeyCreatedResponse",
    "ApiKeyListResponse",
    "ApiKeyResponse",
    "AuditEventResponse",
    "ClientCreateRequest",
    "ClientCreatedResponse",
    "ClientListQuery",
    "ClientListResponse",
    "ClientResponse",
    "ClientTokenRequest",
    "ClientTokenResponse",
    "IntrospectionRequest",
    "IntrospectionResponse",
    "OAuthErrorResponse",
    "RolesRequest",
]

ScopeName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
]
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
RoleName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiKeyCreateRequest(_Request):
    """A new API key: its scopes must be among yours; it must expire."""

    name: Name
    scopes: list[ScopeName] = Field(min_length=1, max_length=32)
    expires_in_days: int = Field(ge=1, le=3650)


class _FromRecord(BaseModel):
    # Made from a repository record by attribute name: `ApiKeyResponse.model_validate(record)`.
    model_config = ConfigDict(from_attributes=True)


class ApiKeyResponse(_FromRecord):
    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None


class ApiKeyCreatedResponse(BaseModel):
    """`key` is shown this once: store it now."""

    id: str
    key: str
    name: str
    scopes: list[str]
    expires_at: datetime


class ApiKeyListResponse(BaseModel):
    api_keys: list[ApiKeyResponse]


class ClientTokenRequest(BaseModel):
    """RFC 6749 4.4.2, form-encoded; client_id/client_secret only for client_secret_post."""

    grant_type: str
    scope: str | None = None
    audience: str | None = None
    client_id: str | None = None
    client_secret: str | None = None


class ClientTokenResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str


class IntrospectionRequest(BaseModel):
    """RFC 7662 2.1, form-encoded, with client authentication as at the token endpoint."""

    token: str = Field(min_length=1)
    token_type_hint: str | None = None
    client_id: str | None = None
    client_secret: str | None = None


class IntrospectionResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    active: bool
    scope: str | None = None
    client_id: str | None = None
    sub: str | None = None
    aud: str | None = None
    exp: int | None = None
    iat: int | None = None
    token_type: str | None = None


class OAuthErrorResponse(BaseModel):
    """RFC 6749 5.2."""

    error: str
    error_description: str


class _PageQuery(BaseModel):
    cursor: str | None = Field(default=None, max_length=512)
    limit: int = Field(default=50, ge=1, le=MAX_PAGE_SIZE)


class AdminUserListQuery(_PageQuery):
    email_prefix: str | None = Field(default=None, max_length=320)
    state: Literal["active", "disabled"] | None = None
    role: str | None = Field(default=None, max_length=64)


class AdminUserResponse(_FromRecord):
    id: UUID
    email: str
    created_at: datetime
    disabled_at: datetime | None
    roles: list[str]


class AdminUserListResponse(BaseModel):
    items: list[AdminUserResponse]
    next_cursor: str | None


class AuditEventResponse(_FromRecord):
    at: datetime
    kind: str
    ip: str
    detail: dict[str, Any]


class AdminSessionResponse(BaseModel):
    id: UUID
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    device: str
    ip: str


class AdminUserDetail(AdminUserResponse):
    sessions: list[AdminSessionResponse]
    api_keys: list[ApiKeyResponse]
    factors: list[dict[str, Any]]
    recent_events: list[AuditEventResponse]


class RolesRequest(_Request):
    """The user's complete set of roles (replaces the current one)."""

    roles: list[RoleName] = Field(max_length=32)


class ClientCreateRequest(_Request):
    name: Name
    scopes: list[ScopeName] = Field(min_length=1, max_length=32)
    audience: str | None = Field(default=None, max_length=256)


class ClientResponse(BaseModel):
    client_id: UUID
    name: str
    scopes: list[str]
    audience: str | None
    created_at: datetime


class ClientCreatedResponse(ClientResponse):
    """`client_secret` is shown this once: store it now."""

    client_secret: str


class ClientListQuery(_PageQuery):
    pass


class ClientListResponse(BaseModel):
    clients: list[ClientResponse]
    next_cursor: str | None
