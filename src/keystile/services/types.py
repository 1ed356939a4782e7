"""Plain values passed between the web layer and the services."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

__all__ = ["ClientInfo", "Principal"]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who is calling, as far as the service can trust it (S26)."""

    ip: str = ""
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    user_id: UUID
    email: str
    via: str  # "session" or "bearer"
    session_id_hash: bytes | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
