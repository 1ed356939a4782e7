"""Tokens sent in mail links, in PostgreSQL: only their SHA-256, one purpose, one use (S34).

A token is live while it is unused and unexpired, its user is active, the user's
password has not changed since it was issued, and (for links about the current
address) the user's email is still the one it was sent to. `consume` checks all
of that and marks it used in one UPDATE, so of two concurrent uses one wins.
Issuing a token deletes the user's older ones of the same purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

import asyncpg

from keystile.repositories.database import PostgresRepository

__all__ = ["EmailTokenRecord", "PostgresEmailTokens", "Purpose"]

Purpose = Literal["verify_email", "reset_password", "change_email", "undo_email_change"]

_EXPIRED_LOCK = 0x6B657973_6C696E6B  # "keyslink"
_EXPIRED_BATCH = 5000


@dataclass(frozen=True, slots=True)
class EmailTokenRecord:
    """A live token: whose, what for, and the address it is about."""

    user_id: UUID
    purpose: Purpose
    email: str  # verify/reset: the address mailed; change: the new one; undo: the old one
    user_email: str  # the user's address now


# Links to the new address (change) or the old one (undo) are about another address
# than the user's current one; every other link must still match it.
_LIVE = """
t.token_hash = $1 AND t.purpose = ANY($2::text[])
AND t.used_at IS NULL AND t.expires_at > now()
AND u.id = t.user_id AND u.disabled_at IS NULL
AND u.password_changed_at = t.password_changed_at
AND (t.purpose IN ('change_email', 'undo_email_change') OR lower(u.email) = lower(t.email))
"""


# Mail a link to whoever has this address, or to nobody, in one statement that costs the
# same either way and always writes (the audit event): the time of the answer does not
# tell whether the account exists (S35). Disabled accounts count as absent.
_REQUEST_BY_EMAIL = """
WITH u AS (
    SELECT id, email, password_changed_at FROM users
    WHERE lower(email) = lower($1) AND disabled_at IS NULL
      AND ($9::bool IS FALSE OR email_verified_at IS NULL)
), superseded AS (
    DELETE FROM email_tokens t USING u WHERE t.user_id = u.id AND t.purpose = $3
), token AS (
    INSERT INTO email_tokens (token_hash, user_id, purpose, email, password_changed_at, expires_at)
    SELECT $2, u.id, $3, u.email, u.password_changed_at, now() + $4 * interval '1 second' FROM u
    RETURNING user_id, email
), mail AS (
    INSERT INTO outbox (kind, user_id, recipient, context)
    SELECT $5, token.user_id, token.email, $6 FROM token RETURNING id
), audit AS (
    INSERT INTO audit_events (kind, user_id, ip, user_agent, detail)
    VALUES ($7, (SELECT id FROM u), $8, $10, $11::jsonb)
)
SELECT (SELECT id FROM mail) AS mail_id
"""


class PostgresEmailTokens(PostgresRepository):
    """Issue, check and spend link tokens."""

    async def insert(
        self,
        connection: asyncpg.Connection,
        *,
        token_hash: bytes,
        user_id: UUID,
        purpose: Purpose,
        email: str,
        password_changed_at: datetime,
        ttl_seconds: int,
    ) -> None:
        """Store a new token in the caller's transaction; older ones of its purpose go."""
        await connection.execute(
            "DELETE FROM email_tokens WHERE user_id = $1 AND purpose = $2", user_id, purpose
        )
        await connection.execute(
            "INSERT INTO email_tokens "
            "(token_hash, user_id, purpose, email, password_changed_at, expires_at) "
            "VALUES ($1, $2, $3, $4, $5, now() + $6 * interval '1 second')",
            token_hash,
            user_id,
            purpose,
            email,
            password_changed_at,
            ttl_seconds,
        )

    async def request_by_email(
        self,
        email: str,
        *,
        token_hash: bytes,
        purpose: Purpose,
        ttl_seconds: int,
        kind: str,
        sealed_context: str,
        only_unverified: bool,
        audit_kind: str,
        ip: str,
        user_agent: str,
        audit_detail: str = "{}",
    ) -> int | None:
        """Issue a token and queue its mail if an active account has `email`; audit either way.

        Returns the outbox id, or None when no account got mail.
        """
        mail_id: int | None = await self._db.fetchval(
            _REQUEST_BY_EMAIL,
            email,
            token_hash,
            purpose,
            ttl_seconds,
            kind,
            sealed_context,
            audit_kind,
            ip[:64],
            only_unverified,
            user_agent[:256],
            audit_detail,
        )
        return mail_id

    async def peek(self, token_hash: bytes, purposes: list[str]) -> EmailTokenRecord | None:
        """Return the token if it is live for one of `purposes`, without spending it."""
        row = await self._db.fetchrow(
            "SELECT t.user_id, t.purpose, t.email, u.email AS user_email "
            f"FROM email_tokens t JOIN users u ON u.id = t.user_id WHERE {_LIVE}",
            token_hash,
            purposes,
        )
        return None if row is None else EmailTokenRecord(**dict(row))

    async def consume(
        self, connection: asyncpg.Connection, token_hash: bytes, purposes: list[str]
    ) -> EmailTokenRecord | None:
        """Spend a live token in the caller's transaction; None if it is not live."""
        row = await connection.fetchrow(
            "UPDATE email_tokens t SET used_at = now() FROM users u "
            f"WHERE {_LIVE} RETURNING t.user_id, t.purpose, t.email, u.email AS user_email",
            token_hash,
            purposes,
        )
        return None if row is None else EmailTokenRecord(**dict(row))

    async def explain(self, token_hash: bytes, purposes: list[str]) -> str:
        """Say why a token is not live, for the audit log (never for the caller)."""
        row = await self._db.fetchrow(
            "SELECT t.purpose = ANY($2::text[]) AS right_purpose, t.used_at IS NOT NULL AS used, "
            "t.expires_at <= now() AS expired, u.disabled_at IS NOT NULL AS disabled, "
            "u.password_changed_at <> t.password_changed_at AS password_changed "
            "FROM email_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
            token_hash,
            purposes,
        )
        if row is None:
            return "unknown"
        if not row["right_purpose"]:
            return "wrong_purpose"
        for reason in ("used", "expired", "disabled", "password_changed"):
            if row[reason]:
                return reason
        return "address_changed"

    async def delete_user_tokens(
        self, connection: asyncpg.Connection, user_id: UUID, purposes: list[str]
    ) -> None:
        """Delete the user's tokens of `purposes` in the caller's transaction."""
        await connection.execute(
            "DELETE FROM email_tokens WHERE user_id = $1 AND purpose = ANY($2::text[])",
            user_id,
            purposes,
        )

    async def delete_expired(self, before: datetime) -> int:
        """Delete tokens that expired before `before`; 0 if another worker is at it."""
        return await self._db.delete_in_batches(
            _EXPIRED_LOCK,
            "DELETE FROM email_tokens WHERE token_hash IN (SELECT token_hash FROM email_tokens "
            "WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
            before,
            batch=_EXPIRED_BATCH,
        )
