"""Second factors in PostgreSQL: TOTP secrets (sealed), recovery codes (HMAC), passkeys.

Every change of a user's factors recomputes `users.mfa_factors` in the same
transaction, so the login lookup (which reads the user row anyway) knows whether a
second step is needed without another query. Sealed secrets and recovery codes record
the id of the secret key they are under (`secret_key_id`), written with them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from keystile.repositories.database import PostgresRepository

__all__ = ["FactorsChanged", "Passkey", "PostgresMfaRepository", "TotpRecord"]

# Runs inside the transaction of a factor change with (connection, user id, email):
# for the notice mail, which must commit or roll back with the change.
FactorsChanged = Callable[[asyncpg.Connection, UUID, str], Awaitable[None]]

_RECOMPUTE = """
UPDATE users SET mfa_factors = array_remove(ARRAY[
    CASE WHEN EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL)
         THEN 'totp' END,
    CASE WHEN EXISTS (SELECT 1 FROM webauthn_credentials WHERE user_id = $1)
         THEN 'passkey' END
]::text[], NULL)
WHERE id = $1
RETURNING email, mfa_factors
"""


@dataclass(frozen=True, slots=True)
class TotpRecord:
    secret_sealed: bytes
    confirmed: bool
    last_step: int


@dataclass(frozen=True, slots=True)
class Passkey:
    """A registered WebAuthn credential."""

    id: UUID
    user_id: UUID
    credential_id: bytes
    public_key: bytes
    sign_count: int
    backup_eligible: bool
    backed_up: bool
    transports: list[str]
    name: str
    created_at: datetime
    last_used_at: datetime | None


_PASSKEY_COLUMNS = (
    "id, user_id, credential_id, public_key, sign_count, backup_eligible, backed_up, "
    "transports, name, created_at, last_used_at"
)


class PostgresMfaRepository(PostgresRepository):
    """The second-factor tables; every statement is by primary key or index."""

    def transaction(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A transaction of its own, for a notice that goes with no factor change."""
        return self._db.transaction()

    # --- TOTP ------------------------------------------------------------------------

    async def select_totp(self, user_id: UUID) -> TotpRecord | None:
        row = await self._db.fetchrow(
            "SELECT secret_sealed, confirmed_at IS NOT NULL AS confirmed, last_step "
            "FROM mfa_totp WHERE user_id = $1",
            user_id,
        )
        return None if row is None else TotpRecord(**dict(row))

    async def upsert_pending_totp(
        self, user_id: UUID, sealed: bytes, secret_key_id: str | None
    ) -> bool:
        """Store a new unconfirmed secret; False if a confirmed one exists."""
        row = await self._db.fetchval(
            "INSERT INTO mfa_totp (user_id, secret_sealed, secret_key_id) VALUES ($1, $2, $3) "
            "ON CONFLICT (user_id) DO UPDATE SET secret_sealed = EXCLUDED.secret_sealed, "
            "secret_key_id = EXCLUDED.secret_key_id, created_at = now(), last_step = 0 "
            "WHERE mfa_totp.confirmed_at IS NULL "
            "RETURNING user_id",
            user_id,
            sealed,
            secret_key_id,
        )
        return row is not None

    async def confirm_totp(
        self,
        user_id: UUID,
        step: int,
        codes: Sequence[bytes],
        then: FactorsChanged,
        *,
        secret_key_id: str | None,
    ) -> bool:
        """Confirm the pending secret at `step` and store fresh recovery codes; one commit."""
        async with self._db.transaction() as connection:
            confirmed = await connection.fetchval(
                "UPDATE mfa_totp SET confirmed_at = now(), last_step = $2 "
                "WHERE user_id = $1 AND confirmed_at IS NULL RETURNING user_id",
                user_id,
                step,
            )
            if confirmed is None:
                return False
            await _replace_codes(connection, user_id, codes, secret_key_id)
            await self._changed(connection, user_id, then)
        return True

    async def reseal_totp(
        self, user_id: UUID, old: bytes, new: bytes, secret_key_id: str | None
    ) -> None:
        """Store `new` as the sealed secret if it still is `old` (after a key rotation)."""
        await self._db.execute(
            "UPDATE mfa_totp SET secret_sealed = $3, secret_key_id = $4 "
            "WHERE user_id = $1 AND secret_sealed = $2",
            user_id,
            old,
            new,
            secret_key_id,
        )

    async def count_totp_by_secret_key(self) -> dict[str | None, int]:
        """Return how many confirmed TOTP secrets each secret key id has (None: not recorded)."""
        rows = await self._db.fetch(
            "SELECT secret_key_id, count(*) AS n FROM mfa_totp "
            "WHERE confirmed_at IS NOT NULL GROUP BY secret_key_id"
        )
        return {row["secret_key_id"]: int(row["n"]) for row in rows}

    async def select_unrecorded_totp(
        self, after: UUID | None, limit: int
    ) -> list[tuple[UUID, bytes]]:
        """Return up to `limit` confirmed secrets with no recorded key, by user id after `after`."""
        rows = await self._db.fetch(
            "SELECT user_id, secret_sealed FROM mfa_totp WHERE confirmed_at IS NOT NULL "
            "AND secret_key_id IS NULL AND ($1::uuid IS NULL OR user_id > $1) "
            "ORDER BY user_id LIMIT $2",
            after,
            limit,
        )
        return [(row["user_id"], bytes(row["secret_sealed"])) for row in rows]

    async def use_totp_step(self, user_id: UUID, step: int) -> bool:
        """Record `step` as used; False if it, or a later one, was used already (replay)."""
        used = await self._db.fetchval(
            "UPDATE mfa_totp SET last_step = $2 "
            "WHERE user_id = $1 AND confirmed_at IS NOT NULL AND last_step < $2 "
            "RETURNING user_id",
            user_id,
            step,
        )
        return used is not None

    async def delete_totp(self, user_id: UUID, then: FactorsChanged) -> bool:
        """Remove the authenticator app; recovery codes go with the last factor."""
        async with self._db.transaction() as connection:
            deleted = await connection.fetchval(
                "DELETE FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL "
                "RETURNING user_id",
                user_id,
            )
            if deleted is None:
                return False
            await self._changed(connection, user_id, then)
        return True

    # --- recovery codes ----------------------------------------------------------------

    async def replace_recovery_codes(
        self, user_id: UUID, codes: Sequence[bytes], secret_key_id: str | None
    ) -> None:
        async with self._db.transaction() as connection:
            await _replace_codes(connection, user_id, codes, secret_key_id)

    async def use_recovery_code(
        self, user_id: UUID, code_hmacs: Sequence[bytes]
    ) -> tuple[bytes, int] | None:
        """Spend the live recovery code stored as one of `code_hmacs` (the code's HMAC under
        each secret key); return the HMAC it was stored as and how many are left, or None."""
        async with self._db.transaction() as connection:
            used: bytes | None = await connection.fetchval(
                "UPDATE mfa_recovery_codes SET used_at = now() "
                "WHERE user_id = $1 AND code_hmac = ANY($2::bytea[]) AND used_at IS NULL "
                "RETURNING code_hmac",
                user_id,
                list(code_hmacs),
            )
            if used is None:
                return None
            left: int = await connection.fetchval(
                "SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                user_id,
            )
        return bytes(used), left

    async def recovery_codes_state(self, user_id: UUID, current_key_id: str) -> tuple[int, bool]:
        """Return how many unused codes the user has, and whether any is recorded under
        another secret key than `current_key_id` (one of the rotation's leftovers)."""
        row = await self._db.fetchrow(
            "SELECT count(*) AS left, "
            "coalesce(bool_or(secret_key_id <> $2), false) AS outdated "
            "FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL",
            user_id,
            current_key_id,
        )
        assert row is not None  # an aggregate always has its row
        return int(row["left"]), bool(row["outdated"])

    async def count_recovery_codes_by_secret_key(self) -> dict[str | None, tuple[int, int]]:
        """Return, for each secret key id (None: not recorded), how many unused codes are
        under it and of how many users."""
        rows = await self._db.fetch(
            "SELECT secret_key_id, count(*) AS n, count(DISTINCT user_id) AS users "
            "FROM mfa_recovery_codes WHERE used_at IS NULL GROUP BY secret_key_id"
        )
        return {row["secret_key_id"]: (int(row["n"]), int(row["users"])) for row in rows}

    # --- passkeys ----------------------------------------------------------------------

    async def insert_passkey(
        self,
        user_id: UUID,
        *,
        credential_id: bytes,
        public_key: bytes,
        sign_count: int,
        backup_eligible: bool,
        backed_up: bool,
        transports: list[str],
        name: str,
        codes: Sequence[bytes],
        codes_key_id: str | None,
        then: FactorsChanged,
    ) -> Passkey | None:
        """Store a passkey (None if its credential id is taken); codes if it is the first factor."""
        async with self._db.transaction() as connection:
            row = await connection.fetchrow(
                "INSERT INTO webauthn_credentials (user_id, credential_id, public_key, "
                "sign_count, backup_eligible, backed_up, transports, name) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (credential_id) DO NOTHING "
                f"RETURNING {_PASSKEY_COLUMNS}",
                user_id,
                credential_id,
                public_key,
                sign_count,
                backup_eligible,
                backed_up,
                transports,
                name,
            )
            if row is None:
                return None
            if codes:
                await _replace_codes(connection, user_id, codes, codes_key_id)
            await self._changed(connection, user_id, then)
        return Passkey(**dict(row))

    async def select_passkeys(self, user_id: UUID) -> list[Passkey]:
        rows = await self._db.fetch(
            f"SELECT {_PASSKEY_COLUMNS} FROM webauthn_credentials WHERE user_id = $1 "
            "ORDER BY created_at",
            user_id,
        )
        return [Passkey(**dict(row)) for row in rows]

    async def select_passkey_by_credential(self, credential_id: bytes) -> Passkey | None:
        row = await self._db.fetchrow(
            f"SELECT {_PASSKEY_COLUMNS} FROM webauthn_credentials WHERE credential_id = $1",
            credential_id,
        )
        return None if row is None else Passkey(**dict(row))

    async def update_passkey_use(
        self, passkey_id: UUID, old_count: int, new_count: int, backed_up: bool
    ) -> bool:
        """Store the new sign counter; False if another login moved it first."""
        updated = await self._db.fetchval(
            "UPDATE webauthn_credentials SET sign_count = $3, backed_up = $4, "
            "last_used_at = now() WHERE id = $1 AND sign_count = $2 RETURNING id",
            passkey_id,
            old_count,
            new_count,
            backed_up,
        )
        return updated is not None

    async def rename_passkey(self, user_id: UUID, passkey_id: UUID, name: str) -> bool:
        updated = await self._db.fetchval(
            "UPDATE webauthn_credentials SET name = $3 WHERE id = $2 AND user_id = $1 RETURNING id",
            user_id,
            passkey_id,
            name,
        )
        return updated is not None

    async def delete_passkey(self, user_id: UUID, passkey_id: UUID, then: FactorsChanged) -> bool:
        async with self._db.transaction() as connection:
            deleted = await connection.fetchval(
                "DELETE FROM webauthn_credentials WHERE id = $2 AND user_id = $1 RETURNING id",
                user_id,
                passkey_id,
            )
            if deleted is None:
                return False
            await self._changed(connection, user_id, then)
        return True

    # --- all factors ---------------------------------------------------------------------

    async def delete_all(self, user_id: UUID, then: FactorsChanged) -> int:
        """Remove every factor and recovery code of the user; return how many factors."""
        async with self._db.transaction() as connection:
            totp = await connection.fetchval(
                "WITH gone AS (DELETE FROM mfa_totp WHERE user_id = $1 RETURNING confirmed_at) "
                "SELECT count(*) FROM gone WHERE confirmed_at IS NOT NULL",
                user_id,
            )
            passkeys = await connection.fetchval(
                "WITH gone AS (DELETE FROM webauthn_credentials WHERE user_id = $1 RETURNING 1) "
                "SELECT count(*) FROM gone",
                user_id,
            )
            await connection.execute("DELETE FROM mfa_recovery_codes WHERE user_id = $1", user_id)
            removed = int(totp) + int(passkeys)
            if removed:
                await self._changed(connection, user_id, then)
            else:
                await connection.fetchrow(_RECOMPUTE, user_id)
        return removed

    async def _changed(
        self, connection: asyncpg.Connection, user_id: UUID, then: FactorsChanged
    ) -> None:
        row = await connection.fetchrow(_RECOMPUTE, user_id)
        if row is not None:
            if not row["mfa_factors"]:
                # No factor left: recovery codes would be a second factor of nothing.
                await connection.execute(
                    "DELETE FROM mfa_recovery_codes WHERE user_id = $1", user_id
                )
            await then(connection, user_id, row["email"])


async def _replace_codes(
    connection: asyncpg.Connection,
    user_id: UUID,
    codes: Sequence[bytes],
    secret_key_id: str | None,
) -> None:
    # Every code of a user is replaced at once, so all are under the same secret key.
    await connection.execute("DELETE FROM mfa_recovery_codes WHERE user_id = $1", user_id)
    await connection.executemany(
        "INSERT INTO mfa_recovery_codes (user_id, code_hmac, secret_key_id) VALUES ($1, $2, $3)",
        [(user_id, code, secret_key_id) for code in codes],
    )
