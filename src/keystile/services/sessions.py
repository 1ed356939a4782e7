"""Server-side cookie sessions: random ids, idle and absolute expiry, revocation (S7, S9)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from keystile.errors import NotAuthenticated
from keystile.repositories.sessions import SessionRecord, SessionRepository
from keystile.repositories.users import User
from keystile.services.types import ClientInfo, Principal

__all__ = ["SessionService", "hash_session_id"]


def hash_session_id(session_id: str) -> bytes:
    """Return what is stored for a session id: its SHA-256, never the id itself (S18)."""
    return hashlib.sha256(session_id.encode()).digest()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SessionService:
    """Create, check and end cookie sessions."""

    def __init__(
        self,
        repository: SessionRepository,
        *,
        idle_timeout: timedelta,
        absolute_lifetime: timedelta,
        touch_interval: timedelta,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._repository = repository
        self._idle_timeout = idle_timeout
        self._absolute_lifetime = absolute_lifetime
        self._touch_interval = touch_interval
        self._clock = clock

    async def create(self, user: User, client: ClientInfo) -> str:
        """Start a session for `user`; return its new random id (256 bits, CSPRNG)."""
        session_id = secrets.token_urlsafe(32)
        await self._repository.insert_session(
            hash_session_id(session_id),
            user.id,
            self._clock() + self._absolute_lifetime,
            client.user_agent,
            client.ip,
        )
        return session_id

    async def authenticate(self, session_id: str) -> Principal:
        """Return the principal of a live session or raise `NotAuthenticated`.

        Enforced here on the server, not by the cookie's own lifetime: a revoked,
        expired or idle session, or one whose user was disabled, is refused.
        """
        id_hash = hash_session_id(session_id)
        record = await self._repository.select_session(id_hash)
        now = self._clock()
        if record is None or not self._is_live(record, now):
            raise NotAuthenticated()
        if now - record.last_seen_at >= self._touch_interval:
            await self._repository.touch_session(id_hash, now)
        return Principal(
            user_id=record.user_id, email=record.email, via="session", session_id_hash=id_hash
        )

    async def end(self, session_id_hash: bytes) -> None:
        """Revoke one session."""
        await self._repository.revoke_session(session_id_hash)

    async def end_all(self, user_id: UUID, *, keep: bytes | None = None) -> int:
        """Revoke every session of the user, except `keep` if given; return how many."""
        return await self._repository.revoke_user_sessions(user_id, keep=keep)

    def _is_live(self, record: SessionRecord, now: datetime) -> bool:
        return (
            record.revoked_at is None
            and not record.user_disabled
            and now < record.expires_at
            and now - record.last_seen_at < self._idle_timeout
        )
