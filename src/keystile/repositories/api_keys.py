"""API keys (personal access tokens) in PostgreSQL, looked up by their public id (S43).

Only an HMAC of each key's secret is stored; the key itself is shown once and never kept.
Beside it, the id of the secret key the HMAC is under (`secret_key_id`), for
`keystile secret-keys status`; the records read to check keys leave it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from keystile.repositories.database import PostgresRepository

__all__ = ["ApiKeyRecord", "PostgresApiKeyRepository"]

_COLUMNS = (
    "id, user_id, name, secret_hmac, scopes, created_at, expires_at, last_used_at, revoked_at"
)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored API key: its public id, owner, HMAC of the secret, scopes and lifetime."""

    id: str
    user_id: UUID
    name: str
    secret_hmac: bytes
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """Return JSON-safe values (the Redis copy of the key cache; HMAC only, never a key)."""
        return {
            "id": self.id,
            "user_id": str(self.user_id),
            "name": self.name,
            "secret_hmac": self.secret_hmac.hex(),
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApiKeyRecord:
        """Rebuild a record from `to_json` output; raise ValueError if it is not one."""
        try:
            return cls(
                id=str(data["id"]),
                user_id=UUID(data["user_id"]),
                name=str(data["name"]),
                secret_hmac=bytes.fromhex(data["secret_hmac"]),
                scopes=tuple(data["scopes"]),
                created_at=datetime.fromisoformat(data["created_at"]),
                expires_at=datetime.fromisoformat(data["expires_at"]),
                last_used_at=_from_iso(data["last_used_at"]),
                revoked_at=_from_iso(data["revoked_at"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a cached API key: {exc}") from None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _record(row: asyncpg.Record) -> ApiKeyRecord:
    return ApiKeyRecord(
        **{**dict(row), "secret_hmac": bytes(row["secret_hmac"]), "scopes": tuple(row["scopes"])}
    )


class PostgresApiKeyRepository(PostgresRepository):
    """The api_keys table; every query goes through the primary key or (user_id, created_at)."""

    async def insert_key(
        self,
        key_id: str,
        user_id: UUID,
        name: str,
        secret_hmac: bytes,
        scopes: list[str],
        expires_at: datetime,
        *,
        limit: int,
        secret_key_id: str | None,
    ) -> ApiKeyRecord | None:
        """Insert a key unless the user already holds `limit` live ones (then None).

        The count and the insert run under a lock on the user's row, so two
        concurrent creations cannot both slip under the limit.
        """
        async with self._db.transaction() as connection:
            await connection.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
            live = await connection.fetchval(
                "SELECT count(*) FROM api_keys "
                "WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()",
                user_id,
            )
            if live >= limit:
                return None
            row = await connection.fetchrow(
                "INSERT INTO api_keys "
                "(id, user_id, name, secret_hmac, scopes, expires_at, secret_key_id) "
                f"VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}",
                key_id,
                user_id,
                name,
                secret_hmac,
                scopes,
                expires_at,
                secret_key_id,
            )
        return _record(row)

    async def select_key(self, key_id: str) -> ApiKeyRecord | None:
        return await self._db.fetch_one(
            _record, f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1", key_id
        )

    async def select_user_keys(self, user_id: UUID, limit: int) -> list[ApiKeyRecord]:
        """Return the user's unrevoked keys, expired ones included, newest first."""
        return await self._db.fetch_all(
            _record,
            f"SELECT {_COLUMNS} FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL "
            f"ORDER BY created_at DESC LIMIT $2",
            user_id,
            limit,
        )

    async def touch_key(self, key_id: str, used_at: datetime) -> None:
        """Move `last_used_at` forward (never backward, whatever order writes land in)."""
        await self._db.execute(
            "UPDATE api_keys SET last_used_at = $2 "
            "WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            key_id,
            used_at,
        )

    async def replace_digest(
        self, key_id: str, old: bytes, new: bytes, secret_key_id: str | None
    ) -> None:
        """Store `new` as the key's HMAC if it still is `old` (re-digested after a key rotation)."""
        await self._db.execute(
            "UPDATE api_keys SET secret_hmac = $3, secret_key_id = $4 "
            "WHERE id = $1 AND secret_hmac = $2",
            key_id,
            old,
            new,
            secret_key_id,
        )

    async def count_live_by_secret_key(self) -> dict[str | None, int]:
        """Return how many live keys (neither revoked nor expired) each secret key id has.

        A scan of the table, for an operator's command (None: not recorded).
        """
        rows = await self._db.fetch(
            "SELECT secret_key_id, count(*) AS n FROM api_keys "
            "WHERE revoked_at IS NULL AND expires_at > now() GROUP BY secret_key_id"
        )
        return {row["secret_key_id"]: int(row["n"]) for row in rows}

    async def revoke_key(self, user_id: UUID, key_id: str) -> bool:
        """Revoke one of the user's keys; False if it is unknown, another's, or revoked."""
        return (
            await self._db.execute_count(
                "UPDATE api_keys SET revoked_at = now() "
                "WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
                key_id,
                user_id,
            )
            == 1
        )

    async def revoke_user_keys(self, user_id: UUID) -> list[str]:
        """Revoke every live key of the user; return their ids."""
        rows = await self._db.fetch(
            "UPDATE api_keys SET revoked_at = now() "
            "WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
            user_id,
        )
        return [str(row["id"]) for row in rows]
