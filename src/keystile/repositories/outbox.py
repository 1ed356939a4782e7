"""The mail outbox in PostgreSQL: queued in the writer's transaction, claimed by senders (S38).

A message is a row written by `enqueue` on the connection of the transaction that
causes it, so it exists exactly when the change does. Senders `claim` due rows
with `FOR UPDATE SKIP LOCKED` (concurrent senders never get the same row) and a
lease: the claim commits at once, and a row whose lease ran out without being
marked sent (its sender died) is due again for any sender. Each claim carries a
fresh `claim_id`, and marking sent or failed only counts for the current claim.

The template values (`context`, links with their tokens included) are sealed
under the secret key, so a reader of the table learns no usable link, and they
are dropped once the message is sent or dead.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from keystile import metrics
from keystile.repositories.database import Database, PostgresRepository
from keystile.secret_keys import note_fallback_used
from keystile.stores.sealing import Sealer

__all__ = ["ClaimedMail", "OutboxStats", "OutgoingMail", "PostgresOutbox"]

_ERROR_LENGTH = 500
# Only one worker deletes old rows at a time.
_PRUNE_LOCK = 0x6B657973_6D61696C  # "keysmail"
_PRUNE_BATCH = 5000


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """A message to queue: which template, to whom, and the template's values."""

    kind: str
    recipient: str
    context: dict[str, Any]
    user_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class ClaimedMail:
    """A message a sender holds the claim on until `mark_*` or the lease ends."""

    id: int
    kind: str
    recipient: str
    user_id: UUID | None
    sealed_context: str | None
    attempts: int  # including this one
    created_at: datetime
    claim_id: UUID


@dataclass(frozen=True, slots=True)
class OutboxStats:
    unsent: int
    oldest_unsent_age: float  # seconds; 0 when nothing waits


_CLAIM = """
UPDATE outbox o SET claim_id = $3, claimed_until = now() + $2 * interval '1 second',
                    attempts = o.attempts + 1
WHERE o.id IN (
    SELECT id FROM outbox
    WHERE sent_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now()
      AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING o.id, o.kind, o.recipient, o.user_id, o.context AS sealed_context, o.attempts,
          o.created_at, o.claim_id
"""


class PostgresOutbox(PostgresRepository):
    """Queue, claim and settle outgoing mail."""

    def __init__(self, database: Database, sealer: Sealer[dict[str, Any]]) -> None:
        super().__init__(database)
        self._sealer = sealer

    async def enqueue(self, connection: asyncpg.Connection, mail: OutgoingMail) -> int:
        """Queue `mail` in the caller's transaction; return its id."""
        mail_id: int = await connection.fetchval(
            "INSERT INTO outbox (kind, user_id, recipient, context) "
            "VALUES ($1, $2, $3, $4) RETURNING id",
            mail.kind,
            mail.user_id,
            mail.recipient,
            self.seal(mail.context),
        )
        metrics.MAIL_QUEUED.labels(mail.kind).inc()
        return mail_id

    def seal(self, context: dict[str, Any]) -> str:
        """Return template values as stored: encrypted and authenticated."""
        return self._sealer.seal(context)

    def unseal(self, mail: ClaimedMail) -> dict[str, Any]:
        """Return the template values of a claimed message; ValueError if unreadable.

        A message queued before the secret key was rotated opens under a previous key.
        """
        context, stale = self._sealer.unseal_stale(mail.sealed_context)
        if stale:
            note_fallback_used("mail_outbox")
        return context

    async def claim(self, limit: int, lease_seconds: float) -> list[ClaimedMail]:
        """Claim up to `limit` due messages for `lease_seconds`; each claim counts an attempt."""
        rows = await self._db.fetch(_CLAIM, limit, lease_seconds, uuid.uuid4())
        return [ClaimedMail(**dict(row)) for row in rows]

    async def mark_sent(self, mail: ClaimedMail) -> bool:
        """Record the message as sent; False if the claim had lapsed and another took it."""
        return (
            await self._db.execute_count(
                "UPDATE outbox SET sent_at = now(), context = NULL, claimed_until = NULL, "
                "last_error = NULL WHERE id = $1 AND claim_id = $2 AND sent_at IS NULL",
                mail.id,
                mail.claim_id,
            )
            == 1
        )

    async def mark_failed(self, mail: ClaimedMail, error: str, retry_in: float | None) -> None:
        """Record a failed attempt: due again in `retry_in` seconds, or dead when None."""
        if retry_in is None:
            await self._db.execute(
                "UPDATE outbox SET dead_at = now(), context = NULL, claimed_until = NULL, "
                "last_error = $3 WHERE id = $1 AND claim_id = $2 AND sent_at IS NULL",
                mail.id,
                mail.claim_id,
                error[:_ERROR_LENGTH],
            )
            return
        await self._db.execute(
            "UPDATE outbox SET next_attempt_at = now() + $3 * interval '1 second', "
            "claimed_until = NULL, last_error = $4 "
            "WHERE id = $1 AND claim_id = $2 AND sent_at IS NULL",
            mail.id,
            mail.claim_id,
            retry_in,
            error[:_ERROR_LENGTH],
        )

    async def release(self, mail: ClaimedMail) -> None:
        """Give a claim back untried (the transport was down): the attempt does not count."""
        await self._db.execute(
            "UPDATE outbox SET claimed_until = NULL, attempts = attempts - 1 "
            "WHERE id = $1 AND claim_id = $2 AND sent_at IS NULL AND dead_at IS NULL",
            mail.id,
            mail.claim_id,
        )

    async def stats(self) -> OutboxStats:
        """Return how many messages wait and how old the oldest is."""
        row = await self._db.fetchrow(
            "SELECT count(*) AS unsent, "
            "coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age "
            "FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL"
        )
        assert row is not None
        return OutboxStats(unsent=row["unsent"], oldest_unsent_age=row["age"])

    async def delete_settled_before(self, cutoff: datetime) -> int:
        """Delete sent and dead messages queued before `cutoff`; 0 if another worker is at it."""
        return await self._db.delete_in_batches(
            _PRUNE_LOCK,
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE created_at < $1 "
            "AND (sent_at IS NOT NULL OR dead_at IS NOT NULL) ORDER BY created_at LIMIT $2)",
            cutoff,
            batch=_PRUNE_BATCH,
        )
