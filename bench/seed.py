"""Seed `bench-user-<i>@example.com` accounts in bulk, fast.

One argon2id hash is computed once and copied into every row: hashing a million
passwords would take hours, and a login's cost does not depend on which user's
hash it checks. Rows go in with COPY (asyncpg `copy_records_to_table`) in chunks,
with a progress bar on stderr.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator

import argon2
import asyncpg

__all__ = [
    "ADMIN_USER",
    "PASSWORD",
    "email_of",
    "grant_admin",
    "hash_password",
    "reset_users",
    "seed_users",
]

PASSWORD = "bench-password-0123"  # noqa: S105 - the seeded accounts' well-known password
_CHUNK = 25_000
_BAR = 30


def email_of(index: int) -> str:
    """Return the email of seeded user `index` (the Lua scripts build the same string)."""
    return f"bench-user-{index}@example.com"


def hash_password(memory_kib: int, time_cost: int, parallelism: int) -> str:
    """Hash the bench password once with the parameters the servers are given."""
    hasher = argon2.PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=argon2.Type.ID
    )
    return hasher.hash(PASSWORD)


def reset_users(database_url: str) -> None:
    """Empty the users table and everything hanging off it (the bench owns this database)."""

    async def _reset() -> None:
        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            await connection.execute("TRUNCATE users, audit_events CASCADE", timeout=60)
        finally:
            await connection.close()

    asyncio.run(_reset())


def _rows(first: int, stop: int, password_hash: str) -> Iterator[tuple[str, str]]:
    for index in range(first, stop):
        yield email_of(index), password_hash


def _progress(label: str, done: int, total: int, previous: int, started: float) -> None:
    filled = _BAR * done // max(total, 1)
    rate = done / max(time.monotonic() - started, 1e-6)
    bar = f"  {label} [{'#' * filled}{' ' * (_BAR - filled)}] {done:>9,}/{total:,}  {rate:,.0f}/s"
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{bar}" + ("\n" if done >= total else ""))
    elif done >= total or 4 * done // max(total, 1) > 4 * previous // max(total, 1):
        sys.stderr.write(bar + "\n")  # a log file gets a line per quarter, not a \r storm
    sys.stderr.flush()


def seed_users(database_url: str, first: int, stop: int, password_hash: str) -> float:
    """Insert users `first` .. `stop - 1`; return the seconds it took."""

    async def _seed() -> None:
        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            total = stop - first
            started = time.monotonic()
            for chunk_start in range(first, stop, _CHUNK):
                chunk_stop = min(chunk_start + _CHUNK, stop)
                await connection.copy_records_to_table(
                    "users",
                    records=_rows(chunk_start, chunk_stop, password_hash),
                    columns=["email", "password_hash"],
                    timeout=120,
                )
                _progress(
                    f"seeding users {first:,}..{stop:,}",
                    chunk_stop - first,
                    total,
                    chunk_start - first,
                    started,
                )
            await connection.execute("ANALYZE users", timeout=120)
        finally:
            await connection.close()

    started = time.monotonic()
    asyncio.run(_seed())
    return time.monotonic() - started


# The seeded user who registers the OAuth clients of the `client-credentials` scenario.
ADMIN_USER = 0


def grant_admin(database_url: str, index: int = ADMIN_USER) -> None:
    """Give seeded user `index` the admin role (what `keystile user grant-role` does).

    A no-op on a schema without roles (a keystile before machine access).
    """

    async def _grant() -> None:
        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            has_roles = await connection.fetchval(
                "SELECT 1 FROM information_schema.columns "
                "WHERE table_name = 'users' AND column_name = 'roles'"
            )
            if has_roles:
                await connection.execute(
                    "UPDATE users SET roles = ARRAY['admin'] WHERE email = $1", email_of(index)
                )
        finally:
            await connection.close()

    asyncio.run(_grant())
