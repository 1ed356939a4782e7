"""Signing keys in PostgreSQL: public JWK in clear, private key encrypted (S19)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from keystile.repositories.database import Database

__all__ = ["PostgresSigningKeyRepository", "SigningKeyRecord", "SigningKeyRepository"]

_COLUMNS = "kid, alg, public_jwk, private_key, not_before, retired_at, created_at"
# Serialises key creation across workers and the CLI (any constant works; this is "kstl").
_LOCK_ID = 0x6B73746C


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """A stored key; `private_key` is ciphertext only the matching secret opens."""

    kid: str
    alg: str
    public_jwk: dict[str, Any]
    private_key: bytes
    not_before: datetime
    retired_at: datetime | None
    created_at: datetime


def _record(row: Any) -> SigningKeyRecord:
    values = dict(row)
    values["public_jwk"] = json.loads(values["public_jwk"])
    return SigningKeyRecord(**values)


class SigningKeyRepository(Protocol):
    """What the key ring and the rotation command need from key storage."""

    async def select_live_keys(self, fingerprint: bytes) -> list[SigningKeyRecord]: ...
    async def insert_first_key(
        self, fingerprint: bytes, record: SigningKeyRecord
    ) -> SigningKeyRecord | None: ...
    async def insert_next_key(
        self,
        fingerprint: bytes,
        record: SigningKeyRecord,
        *,
        promote_after: timedelta,
        retire_after: timedelta,
    ) -> tuple[SigningKeyRecord, list[str]] | None: ...


class PostgresSigningKeyRepository:
    """The keys of one deployment are those whose `secret_fingerprint` matches its secret."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def select_live_keys(self, fingerprint: bytes) -> list[SigningKeyRecord]:
        """Return every key not yet retired: next, current and previous ones."""
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM signing_keys WHERE secret_fingerprint = $1 "
            f"AND (retired_at IS NULL OR retired_at > now()) ORDER BY not_before",
            fingerprint,
        )
        return [_record(row) for row in rows]

    async def insert_first_key(
        self, fingerprint: bytes, record: SigningKeyRecord
    ) -> SigningKeyRecord | None:
        """Insert `record`, valid from now, unless a usable key exists; return it if inserted.

        Workers starting together take an advisory lock, so exactly one creates the key.
        """
        async with self._db.transaction() as connection:
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
            usable = await connection.fetchval(
                "SELECT 1 FROM signing_keys WHERE secret_fingerprint = $1 "
                "AND not_before <= now() AND (retired_at IS NULL OR retired_at > now())",
                fingerprint,
            )
            if usable is not None:
                return None
            row = await connection.fetchrow(
                f"INSERT INTO signing_keys (kid, alg, public_jwk, private_key, "
                f"secret_fingerprint, not_before) VALUES ($1, $2, $3::jsonb, $4, $5, now()) "
                f"RETURNING {_COLUMNS}",
                record.kid,
                record.alg,
                json.dumps(record.public_jwk),
                record.private_key,
                fingerprint,
            )
        return _record(row)

    async def insert_next_key(
        self,
        fingerprint: bytes,
        record: SigningKeyRecord,
        *,
        promote_after: timedelta,
        retire_after: timedelta,
    ) -> tuple[SigningKeyRecord, list[str]] | None:
        """Schedule a rotation: `record` signs from now + `promote_after`; keys signing
        until then retire `retire_after` later. Return the new key and the kids scheduled
        to retire, or None if a rotation is already pending.
        """
        async with self._db.transaction() as connection:
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
            pending = await connection.fetchval(
                "SELECT 1 FROM signing_keys WHERE secret_fingerprint = $1 AND not_before > now()",
                fingerprint,
            )
            if pending is not None:
                return None
            row = await connection.fetchrow(
                f"INSERT INTO signing_keys (kid, alg, public_jwk, private_key, "
                f"secret_fingerprint, not_before) "
                f"VALUES ($1, $2, $3::jsonb, $4, $5, now() + $6::interval) RETURNING {_COLUMNS}",
                record.kid,
                record.alg,
                json.dumps(record.public_jwk),
                record.private_key,
                fingerprint,
                promote_after,
            )
            retiring = await connection.fetch(
                "UPDATE signing_keys SET retired_at = $3::timestamptz + $4::interval "
                "WHERE secret_fingerprint = $1 AND kid <> $2 AND retired_at IS NULL "
                "RETURNING kid",
                fingerprint,
                record.kid,
                row["not_before"],
                retire_after,
            )
        return _record(row), [r["kid"] for r in retiring]
