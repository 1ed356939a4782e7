"""OAuth 2.0 clients (client credentials grant) in PostgreSQL; secrets stored as HMACs (S43).

Beside each HMAC, the id of the secret key it is under (`secret_key_id`), for
`keystile secret-keys status`; the records read to check secrets leave it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from keystile.repositories.database import PostgresRepository

__all__ = ["ClientRecord", "PostgresClientRepository"]

_COLUMNS = "id, name, secret_hmac, scopes, audience, created_at, created_by"


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A registered client: the scopes it may ask for and the one extra audience it may name."""

    id: UUID
    name: str
    secret_hmac: bytes
    scopes: tuple[str, ...]
    audience: str | None
    created_at: datetime
    created_by: UUID | None

    def to_json(self) -> dict[str, Any]:
        """Return JSON-safe values (the Redis copy of the client cache)."""
        return {
            "id": str(self.id),
            "name": self.name,
            "secret_hmac": self.secret_hmac.hex(),
            "scopes": list(self.scopes),
            "audience": self.audience,
            "created_at": self.created_at.isoformat(),
            "created_by": None if self.created_by is None else str(self.created_by),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientRecord:
        """Rebuild a record from `to_json` output; raise ValueError if it is not one."""
        try:
            created_by = data["created_by"]
            return cls(
                id=UUID(data["id"]),
                name=str(data["name"]),
                secret_hmac=bytes.fromhex(data["secret_hmac"]),
                scopes=tuple(data["scopes"]),
                audience=data["audience"],
                created_at=datetime.fromisoformat(data["created_at"]),
                created_by=None if created_by is None else UUID(created_by),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a cached client: {exc}") from None


def _record(row: asyncpg.Record) -> ClientRecord:
    return ClientRecord(
        **{**dict(row), "secret_hmac": bytes(row["secret_hmac"]), "scopes": tuple(row["scopes"])}
    )


class PostgresClientRepository(PostgresRepository):
    """The oauth_clients table; lookups by primary key."""

    async def insert_client(
        self,
        name: str,
        secret_hmac: bytes,
        scopes: list[str],
        audience: str | None,
        created_by: UUID | None,
        client_id: UUID,
        *,
        secret_key_id: str | None,
    ) -> ClientRecord:
        row = await self._db.fetchrow(
            "INSERT INTO oauth_clients "
            "(id, name, secret_hmac, scopes, audience, created_by, secret_key_id) "
            f"VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}",
            client_id,
            name,
            secret_hmac,
            scopes,
            audience,
            created_by,
            secret_key_id,
        )
        assert row is not None
        return _record(row)

    async def select_client(self, client_id: UUID) -> ClientRecord | None:
        return await self._db.fetch_one(
            _record, f"SELECT {_COLUMNS} FROM oauth_clients WHERE id = $1", client_id
        )

    async def select_clients_page(
        self, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[ClientRecord]:
        """Return up to `limit` clients ordered by (created_at, id), after the cursor `after`."""
        if after is None:
            return await self._db.fetch_all(
                _record,
                f"SELECT {_COLUMNS} FROM oauth_clients ORDER BY created_at, id LIMIT $1",
                limit,
            )
        return await self._db.fetch_all(
            _record,
            f"SELECT {_COLUMNS} FROM oauth_clients WHERE (created_at, id) > ($1, $2) "
            "ORDER BY created_at, id LIMIT $3",
            *after,
            limit,
        )

    async def replace_digest(
        self, client_id: UUID, old: bytes, new: bytes, secret_key_id: str | None
    ) -> None:
        """Store `new` as the secret's HMAC if it still is `old` (after a key rotation)."""
        await self._db.execute(
            "UPDATE oauth_clients SET secret_hmac = $3, secret_key_id = $4 "
            "WHERE id = $1 AND secret_hmac = $2",
            client_id,
            old,
            new,
            secret_key_id,
        )

    async def count_by_secret_key(self) -> dict[str | None, int]:
        """Return how many clients each secret key id has (a scan; None: not recorded)."""
        rows = await self._db.fetch(
            "SELECT secret_key_id, count(*) AS n FROM oauth_clients GROUP BY secret_key_id"
        )
        return {row["secret_key_id"]: int(row["n"]) for row in rows}

    async def delete_client(self, client_id: UUID) -> bool:
        return (
            await self._db.execute_count("DELETE FROM oauth_clients WHERE id = $1", client_id) == 1
        )
