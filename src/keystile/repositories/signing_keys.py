"""Signing keys in PostgreSQL: public JWK in clear, private key encrypted (S19)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg

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

    @property
    def has_replica(self) -> bool:
        """Whether `select_live_keys(..., from_replica=True)` may lag the writes."""
        ...

    async def select_live_keys(
        self, fingerprints: Sequence[bytes], *, from_replica: bool = False
    ) -> list[SigningKeyRecord]: ...
    async def insert_first_key(
        self, fingerprints: Sequence[bytes], record: SigningKeyRecord
    ) -> SigningKeyRecord | None: ...
    async def insert_next_key(
        self,
        fingerprints: Sequence[bytes],
        record: SigningKeyRecord,
        *,
        promote_after: timedelta,
        retire_after: timedelta,
    ) -> tuple[SigningKeyRecord, list[str]] | None: ...


class PostgresSigningKeyRepository:
    """The keys of one deployment are those whose `secret_fingerprint` matches its secret.

    `fingerprints` are the current secret key's, then the previous keys' (its
    `secret_key_fallbacks`): keys sealed under those are still the deployment's. New keys
    are stored under the first.
    """

    def __init__(self, database: Database) -> None:
        self._db = database

    @property
    def has_replica(self) -> bool:
        return self._db.reads is not self._db

    async def select_live_keys(
        self, fingerprints: Sequence[bytes], *, from_replica: bool = False
    ) -> list[SigningKeyRecord]:
        """Return every key not yet retired: next, current and previous ones.

        `from_replica`: read the read replica (`database_read_url`), if one is set; for
        the periodic reload behind the JWKS, which tolerates lag. A reload that must see
        a rotation just written (at start, after a rotation) reads the primary.
        """
        database = self._db.reads if from_replica else self._db
        rows = await database.fetch(
            f"SELECT {_COLUMNS} FROM signing_keys WHERE secret_fingerprint = ANY($1::bytea[]) "
            f"AND (retired_at IS NULL OR retired_at > now()) ORDER BY not_before",
            list(fingerprints),
        )
        return [_record(row) for row in rows]

    async def insert_first_key(
        self, fingerprints: Sequence[bytes], record: SigningKeyRecord
    ) -> SigningKeyRecord | None:
        """Insert `record`, valid from now, unless a usable key exists; return it if inserted.

        Workers starting together take an advisory lock, so exactly one creates the key.
        """
        async with self._db.transaction() as connection:
            row = await _insert_unless(
                connection, fingerprints, record, existing=_USABLE, delay=timedelta(0)
            )
        return None if row is None else _record(row)

    async def insert_next_key(
        self,
        fingerprints: Sequence[bytes],
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
            row = await _insert_unless(
                connection, fingerprints, record, existing=_PENDING, delay=promote_after
            )
            if row is None:
                return None
            retiring = await connection.fetch(
                "UPDATE signing_keys SET retired_at = $3::timestamptz + $4::interval "
                "WHERE secret_fingerprint = ANY($1::bytea[]) AND kid <> $2 AND retired_at IS NULL "
                "RETURNING kid",
                list(fingerprints),
                record.kid,
                row["not_before"],
                retire_after,
            )
        return _record(row), [r["kid"] for r in retiring]


# What stops an insert: a key usable now (first key), or one not yet promoted (rotation).
_USABLE = "not_before <= now() AND (retired_at IS NULL OR retired_at > now())"
_PENDING = "not_before > now()"


async def _insert_unless(
    connection: asyncpg.Connection,
    fingerprints: Sequence[bytes],
    record: SigningKeyRecord,
    *,
    existing: str,
    delay: timedelta,
) -> asyncpg.Record | None:
    """Under the key lock, insert `record` signing from now + `delay` unless one of the
    deployment's keys matches `existing`; return the inserted row, or None."""
    await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
    found = await connection.fetchval(
        f"SELECT 1 FROM signing_keys WHERE secret_fingerprint = ANY($1::bytea[]) AND {existing}",
        list(fingerprints),
    )
    if found is not None:
        return None
    row: asyncpg.Record | None = await connection.fetchrow(
        f"INSERT INTO signing_keys (kid, alg, public_jwk, private_key, secret_fingerprint, "
        f"not_before) VALUES ($1, $2, $3::jsonb, $4, $5, now() + $6::interval) "
        f"RETURNING {_COLUMNS}",
        record.kid,
        record.alg,
        json.dumps(record.public_jwk),
        record.private_key,
        fingerprints[0],
        delay,
    )
    return row
