"""Plain values passed between the web layer and the services."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from keystile.errors import LimitStatus

if TYPE_CHECKING:
    from keystile.repositories.users import User

__all__ = ["Authenticated", "ClientInfo", "Principal"]


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A successful credential check, with the tightest rate limit it was counted under."""

    user: User
    limits: LimitStatus | None


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who is calling, as far as the service can trust it (S26)."""

    ip: str = ""
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    user_id: UUID  # for via="client": the client's id (there is no user)
    email: str
    via: str  # "session", "bearer", "api_key" or "client"
    session_id_hash: bytes | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    # When the user last proved a password (session start, password grant); None for
    # API keys and clients, which never count as a recent authentication (S45).
    auth_time: datetime | None = None
    api_key_id: str | None = None
    # How the user authenticated (RFC 8176: "pwd", "otp", "hwk"); empty for machines.
    amr: frozenset[str] = frozenset()
    client_id: UUID | None = None
    # For via="bearer": the token family (one login) the access token was issued for.
    family_id: UUID | None = None
