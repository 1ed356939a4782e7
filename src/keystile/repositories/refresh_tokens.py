"""Refresh tokens in PostgreSQL: families, single-use rows keyed by SHA-256 (S16, S18, S33)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol
from uuid import UUID

from keystile.repositories.audit import LoginRecord
from keystile.repositories.database import PostgresRepository

__all__ = [
    "PostgresRefreshTokenRepository",
    "ReauthenticatedFamily",
    "RefreshTokenRepository",
    "RefreshTokenState",
    "RotatedToken",
]


@dataclass(frozen=True, slots=True)
class RotatedToken:
    """A refresh token just marked used, with what is needed to issue its successor."""

    family_id: UUID
    user_id: UUID
    email: str
    token_epoch: int
    scope: str
    roles: list[str]  # the user's, for the access token's `roles` claim
    auth_time: datetime  # the family's password grant: `auth_time` of its access tokens
    email_verified: bool = False
    amr: list[str] = field(default_factory=lambda: ["pwd"])


@dataclass(frozen=True, slots=True)
class RefreshTokenState:
    """Why a refresh token could not be rotated: read after the atomic UPDATE found nothing."""

    family_id: UUID
    user_id: UUID
    email: str
    token_epoch: int
    scope: str
    roles: list[str]
    auth_time: datetime
    used: bool
    used_within_grace: bool
    live: bool  # not revoked, not expired, family live, user active
    email_verified: bool = False
    amr: list[str] = field(default_factory=lambda: ["pwd"])


@dataclass(frozen=True, slots=True)
class ReauthenticatedFamily:
    """A live family whose user just proved themselves again: what a new access token needs."""

    token_epoch: int
    scope: str
    roles: list[str]
    auth_time: datetime
    email_verified: bool
    amr: list[str]


# The token may be rotated only if it, its family and its user are all still good.
# Housekeeping: one worker at a time, in batches small enough to hold locks briefly.
_EXPIRED_LOCK = 0x6B657973_72656672  # "keysref"
_EXPIRED_BATCH = 5000

# One statement: the token marked used and its successor inserted, both or neither.
# Of concurrent rotations of one token, the UPDATE's row lock lets one see
# `used_at IS NULL`; the others find no row, so their INSERT has nothing to insert.
_ROTATE = """
WITH used AS (
  UPDATE refresh_tokens t SET used_at = now()
  FROM refresh_token_families f JOIN users u ON u.id = f.user_id
  WHERE t.token_hash = $1
    AND t.used_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > now()
    AND f.id = t.family_id AND f.revoked_at IS NULL AND f.expires_at > now()
    AND u.disabled_at IS NULL
  RETURNING t.family_id, f.user_id, u.email, u.token_epoch, f.scope, u.roles,
            coalesce(f.auth_time, f.created_at) AS auth_time,
            u.email_verified_at IS NOT NULL AS email_verified, f.amr,
            f.expires_at AS family_expires_at
), successor AS (
  INSERT INTO refresh_tokens (token_hash, family_id, parent_hash, expires_at)
  SELECT $2, family_id, $1, least(now() + $3::interval, family_expires_at) FROM used
)
SELECT family_id, user_id, email, token_epoch, scope, roles, auth_time, email_verified, amr
FROM used
"""

_INSERT_FAMILY = """
WITH family AS (
  INSERT INTO refresh_token_families (user_id, scope, expires_at, amr)
  VALUES ($1, $2, now() + $3::interval, $6) RETURNING id, expires_at
), token AS (
  INSERT INTO refresh_tokens (token_hash, family_id, parent_hash, expires_at)
  SELECT $4, id, NULL, least(now() + $5::interval, expires_at) FROM family
){audit}
SELECT id FROM family
"""

_STATE = """
SELECT t.family_id, f.user_id, u.email, u.token_epoch, f.scope, u.roles,
       coalesce(f.auth_time, f.created_at) AS auth_time,
       t.used_at IS NOT NULL AS used,
       coalesce(now() - t.used_at <= $2::interval, false) AS used_within_grace,
       (t.revoked_at IS NULL AND t.expires_at > now() AND f.revoked_at IS NULL
        AND f.expires_at > now() AND u.disabled_at IS NULL) AS live,
       u.email_verified_at IS NOT NULL AS email_verified, f.amr
FROM refresh_tokens t
JOIN refresh_token_families f ON f.id = t.family_id
JOIN users u ON u.id = f.user_id
WHERE t.token_hash = $1
"""

# A re-authentication moves the family's auth_time (and amr) forward; its refresh
# tokens stay as they are, and later refreshes carry the new auth_time.
_REAUTHENTICATE = """
UPDATE refresh_token_families f SET auth_time = now(), amr = $3
FROM users u
WHERE f.id = $1 AND f.user_id = $2 AND u.id = f.user_id
  AND f.revoked_at IS NULL AND f.expires_at > now() AND u.disabled_at IS NULL
RETURNING u.token_epoch, f.scope, u.roles, f.auth_time,
          u.email_verified_at IS NOT NULL AS email_verified, f.amr
"""

_LIVE_CHILD = """
SELECT 1 FROM refresh_tokens t JOIN refresh_token_families f ON f.id = t.family_id
WHERE t.token_hash = $1 AND t.parent_hash = $2
  AND t.revoked_at IS NULL AND t.expires_at > now()
  AND f.revoked_at IS NULL AND f.expires_at > now()
"""


class RefreshTokenRepository(Protocol):
    """What the token service needs from refresh-token storage."""

    async def insert_family(
        self,
        user_id: UUID,
        scope: str,
        token_hash: bytes,
        *,
        idle: timedelta,
        absolute: timedelta,
        login: LoginRecord,
    ) -> UUID: ...
    async def rotate(
        self, token_hash: bytes, successor_hash: bytes, *, idle: timedelta
    ) -> RotatedToken | None: ...
    async def select_token_state(
        self, token_hash: bytes, *, grace: timedelta
    ) -> RefreshTokenState | None: ...
    async def has_live_child(self, parent_hash: bytes, child_hash: bytes) -> bool: ...
    async def update_family_auth(
        self, family_id: UUID, user_id: UUID, amr: tuple[str, ...]
    ) -> ReauthenticatedFamily | None: ...
    async def revoke_token(self, token_hash: bytes) -> UUID | None: ...
    async def revoke_family(self, family_id: UUID, reason: str) -> bool: ...
    async def revoke_user_families(self, user_id: UUID, reason: str) -> int: ...


class PostgresRefreshTokenRepository(PostgresRepository):
    """Refresh tokens and their families; every lookup is by primary key or index."""

    async def insert_family(
        self,
        user_id: UUID,
        scope: str,
        token_hash: bytes,
        *,
        idle: timedelta,
        absolute: timedelta,
        login: LoginRecord,
    ) -> UUID:
        """Start a family (one password grant) with its first token; return the family id.

        The family, its first token and the audit event are one statement: one round
        trip, one commit, all or nothing.
        """
        audit, audit_values = login.audit_cte(7)
        values = (user_id, scope, absolute, token_hash, idle, list(login.amr), *audit_values)
        family_id: UUID = await self._db.fetchval(_INSERT_FAMILY.format(audit=audit), *values)
        return family_id

    async def rotate(
        self, token_hash: bytes, successor_hash: bytes, *, idle: timedelta
    ) -> RotatedToken | None:
        """Mark the token used and insert its successor, both or neither (S16, S33).

        One statement, one round trip. Its UPDATE is the single point of decision: of
        any number of concurrent callers, the row lock lets exactly one see
        `used_at IS NULL`. A statement that dies (its worker or connection killed)
        leaves nothing, so a family is never left with a used token and no successor.
        """
        row = await self._db.fetchrow(_ROTATE, token_hash, successor_hash, idle)
        return None if row is None else RotatedToken(**dict(row))

    async def select_token_state(
        self, token_hash: bytes, *, grace: timedelta
    ) -> RefreshTokenState | None:
        """Return the state of a token that could not be rotated, or None if unknown."""
        row = await self._db.fetchrow(_STATE, token_hash, grace)
        return None if row is None else RefreshTokenState(**dict(row))

    async def update_family_auth(
        self, family_id: UUID, user_id: UUID, amr: tuple[str, ...]
    ) -> ReauthenticatedFamily | None:
        """Set a live family's auth_time to now and its amr; None if it is not live."""
        row = await self._db.fetchrow(_REAUTHENTICATE, family_id, user_id, list(amr))
        return None if row is None else ReauthenticatedFamily(**dict(row))

    async def has_live_child(self, parent_hash: bytes, child_hash: bytes) -> bool:
        """True when `child_hash` is the live successor of `parent_hash`."""
        return await self._db.fetchval(_LIVE_CHILD, child_hash, parent_hash) is not None

    async def revoke_token(self, token_hash: bytes) -> UUID | None:
        """Revoke one token; return its family id, or None if it is unknown."""
        family_id: UUID | None = await self._db.fetchval(
            "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) "
            "WHERE token_hash = $1 RETURNING family_id",
            token_hash,
        )
        return family_id

    async def revoke_family(self, family_id: UUID, reason: str) -> bool:
        """Revoke a whole family; True if it was live until now."""
        return (
            await self._db.execute_count(
                "UPDATE refresh_token_families SET revoked_at = now(), revoked_reason = $2 "
                "WHERE id = $1 AND revoked_at IS NULL",
                family_id,
                reason,
            )
            == 1
        )

    async def revoke_user_families(self, user_id: UUID, reason: str) -> int:
        """Revoke every live family of the user; return how many."""
        return await self._db.execute_count(
            "UPDATE refresh_token_families SET revoked_at = now(), revoked_reason = $2 "
            "WHERE user_id = $1 AND revoked_at IS NULL",
            user_id,
            reason,
        )

    async def delete_expired(self, cutoff: datetime) -> int:
        """Delete families (and, by cascade, their tokens) that expired before `cutoff`."""
        return await self._db.delete_in_batches(
            _EXPIRED_LOCK,
            "DELETE FROM refresh_token_families WHERE id IN ("
            "SELECT id FROM refresh_token_families WHERE expires_at < $1 "
            "ORDER BY expires_at LIMIT $2)",
            cutoff,
            batch=_EXPIRED_BATCH,
        )
