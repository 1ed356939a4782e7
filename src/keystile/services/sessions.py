"""Server-side cookie sessions: random ids, idle and absolute expiry, revocation (S7, S9).

Checking a session is on every cookie-authenticated request, so its state is read
through a `TieredCache` (in-process, over Redis, over PostgreSQL): the steady
state costs no network round trip. Every path that ends a session invalidates
its cache entry, which every worker drops within milliseconds (Redis pub/sub).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from keystile.errors import NotAuthenticated, NotFound
from keystile.repositories.audit import AuditEntry, LoginRecord
from keystile.repositories.sessions import SessionRecord, SessionRepository
from keystile.repositories.users import User
from keystile.services.devices import describe_user_agent
from keystile.services.touches import Touches
from keystile.services.types import ClientInfo, Principal
from keystile.stores.cache import TieredCache

__all__ = ["SessionCache", "SessionService", "SessionView", "hash_session_id"]

SessionCache = TieredCache[SessionRecord]


def hash_session_id(session_id: str) -> bytes:
    """Return what is stored for a session id: its SHA-256, never the id itself (S18)."""
    return hashlib.sha256(session_id.encode()).digest()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SessionView:
    """One of a user's sessions, as the user may see it."""

    public_id: UUID
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    device: str
    ip: str
    current: bool


@dataclass(frozen=True, slots=True)
class SessionService:
    """Create, check, list and end cookie sessions."""

    repository: SessionRepository
    # The session state cache (also for the invalidation listener, metrics and tests).
    cache: SessionCache
    _: KW_ONLY
    idle_timeout: timedelta
    absolute_lifetime: timedelta
    touch_interval: timedelta
    clock: Callable[[], datetime] = _utcnow
    list_limit: int = 100
    touches: Touches = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "touches", Touches(self.cache))

    async def create(
        self,
        user: User,
        client: ClientInfo,
        *,
        audit: tuple[AuditEntry, ...] = (),
        amr: tuple[str, ...] = ("pwd",),
    ) -> str:
        """Start a session for `user`; return its new random id (256 bits, CSPRNG).

        `audit` events are recorded in the same statement as the session; `amr` says how
        the user authenticated (RFC 8176: pwd, otp, hwk).
        """
        session_id = secrets.token_urlsafe(32)
        await self.repository.insert_session(
            hash_session_id(session_id),
            user.id,
            self.clock() + self.absolute_lifetime,
            client.user_agent,
            client.ip,
            login=LoginRecord(amr, audit),
        )
        return session_id

    async def authenticate(self, session_id: str) -> Principal:
        """Return the principal of a live session or raise `NotAuthenticated`.

        Enforced here on the server, not by the cookie's own lifetime: a revoked,
        expired or idle session, or one whose user was disabled, is refused.
        `last_seen_at` is written at most once per touch interval; the write also
        invalidates the cached copy, so every worker sees the new time.
        """
        id_hash = hash_session_id(session_id)
        key = id_hash.hex()
        record = await self.cache.get(key, lambda: self.repository.select_session(id_hash))
        now = self.clock()
        if record is not None and self._is_idle(record, now) and self._is_valid(record, now):
            # The cached copy may predate another worker's touch: ask the source before
            # refusing, and refresh the cache if the session was in fact in use.
            fresh = await self.repository.select_session(id_hash)
            if fresh is not None and fresh.last_seen_at != record.last_seen_at:
                await self.cache.invalidate(key)
            record = fresh
        if record is None or not self._is_valid(record, now) or self._is_idle(record, now):
            raise NotAuthenticated()
        if now - record.last_seen_at >= self.touch_interval:
            # PostgreSQL down: the session is valid from its copy and the touch waits.
            await self.touches.touch(key, lambda: self.repository.touch_session(id_hash, now))
        return Principal(
            user_id=record.user_id,
            email=record.email,
            via="session",
            session_id_hash=id_hash,
            # The login, or the latest re-authentication (`reauthenticated`).
            auth_time=record.auth_time or record.created_at,
            amr=frozenset(record.amr),
        )

    async def list_sessions(self, principal: Principal) -> list[SessionView]:
        """Return the caller's live sessions, newest first, the current one marked."""
        now = self.clock()
        records = await self.repository.select_user_sessions(principal.user_id, self.list_limit)
        live = [record for record in records if not self._is_idle(record, now)]
        devices = await asyncio.to_thread(
            lambda: [describe_user_agent(record.user_agent) for record in live]
        )
        return [
            SessionView(
                public_id=record.public_id,
                created_at=record.created_at,
                last_seen_at=record.last_seen_at,
                expires_at=record.expires_at,
                device=device,
                ip=record.ip,
                current=record.id_hash == principal.session_id_hash,
            )
            for record, device in zip(live, devices, strict=True)
        ]

    async def reauthenticated(self, session_id_hash: bytes, amr: tuple[str, ...]) -> None:
        """Record that the user of a live session proved themselves again, as `amr` says.

        The session keeps its id; its auth_time becomes now (PostgreSQL, then every
        worker's cached copy is dropped). `NotAuthenticated` if it ended meanwhile.
        """
        if not await self.repository.update_session_auth(session_id_hash, amr):
            raise NotAuthenticated()
        await self.cache.invalidate(session_id_hash.hex())

    async def end(self, session_id_hash: bytes) -> None:
        """Revoke one session; every worker refuses it from now on."""
        await self.repository.revoke_session(session_id_hash)
        await self.cache.invalidate(session_id_hash.hex(), outage_copy="end")

    async def end_by_public_id(self, principal: Principal, public_id: UUID) -> bool:
        """Revoke one of the caller's sessions by its public id; return True if it was this one.

        Raises `NotFound` for an unknown id, another user's session or one already ended,
        alike, so the answer reveals nothing about other users' sessions.
        """
        id_hash = await self.repository.revoke_session_by_public_id(principal.user_id, public_id)
        if id_hash is None:
            raise NotFound("No such session.")
        await self.cache.invalidate(id_hash.hex(), outage_copy="end")
        return id_hash == principal.session_id_hash

    async def end_all(self, user_id: UUID, *, keep: bytes | None = None) -> int:
        """Revoke every session of the user, except `keep` if given; return how many."""
        hashes = await self.repository.revoke_user_sessions(user_id, keep=keep)
        await asyncio.gather(
            *(self.cache.invalidate(id_hash.hex(), outage_copy="end") for id_hash in hashes)
        )
        return len(hashes)

    def _is_valid(self, record: SessionRecord, now: datetime) -> bool:
        return record.revoked_at is None and not record.user_disabled and now < record.expires_at

    def _is_idle(self, record: SessionRecord, now: datetime) -> bool:
        return now - record.last_seen_at >= self.idle_timeout
