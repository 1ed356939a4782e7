"""The shared test servers and settings on them."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from keystile.embedded import EmbeddedPostgres
from keystile.rates import Action
from keystile.runtime import migrate
from keystile.settings import Settings

__all__ = [
    "CATALOG",
    "CHEAP_ARGON2",
    "ROOMY_IP_LIMITS",
    "ROOMY_RATE",
    "Backing",
    "fresh_database",
    "make_settings",
    "private_postgres",
]

CATALOG = "keystile_catalog:CatalogExtension"

# Cheap argon2id for speed; production parameters are tested where they matter.
CHEAP_ARGON2 = {
    "argon2_memory_kib": 64,
    "argon2_time_cost": 1,
    "argon2_parallelism": 1,
    "argon2_allow_weak": True,  # below OWASP's minimum: refused without it (S4)
}

# Every test shares one Redis, and the test client has no socket address, so the
# production per-address limits would throttle unrelated tests against each other.
# Tests of the limits set their own and send from their own addresses (`from_ip`).
ROOMY_RATE = "100000/minute"
ROOMY_IP_LIMITS = {action: {"per_ip": ROOMY_RATE} for action in Action}


@dataclass(frozen=True)
class Backing:
    database_url: str
    redis_url: str
    postgres: EmbeddedPostgres | None
    data_dir: Path = Path("var")
    pgbouncer: bool = False  # database_url is PgBouncer in transaction mode ...
    direct_database_url: str | None = None  # ... and this is PostgreSQL itself


def make_settings(backing: Backing, **overrides: Any) -> Settings:
    """Return test settings on the shared servers; keyword arguments override."""
    values: dict[str, Any] = {
        "database_url": backing.database_url,
        "redis_url": backing.redis_url,
        "secret_key": secrets.token_hex(32),
        "cookie_secure": False,
        "db_pool_size": 3,
        "hash_threads": 2,
        # Mail is queued but not sent unless a test starts a sender (tests/mail_support.py);
        # the development Maildir, if anything writes one, stays out of the checkout.
        "outbox_sender_enabled": False,
        "data_dir": backing.data_dir,
        "db_pgbouncer": backing.pgbouncer,
        **CHEAP_ARGON2,
        "limits": {"rates": ROOMY_IP_LIMITS},
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def private_postgres(directory: Path, backing: Backing) -> Iterator[tuple[EmbeddedPostgres, str]]:
    """Start a migrated embedded PostgreSQL of one test's own (to stop it, or replicate it)
    under `directory`; yield it and its URL; delete it afterwards.

    Never the shared one: outage tests stop it while other tests run.
    """
    postgres = EmbeddedPostgres(directory, delete_on_stop=True)
    url = postgres.start()
    try:
        migrate(Settings(database_url=url, redis_url=backing.redis_url))
        yield postgres, url
    finally:
        postgres.stop()


@contextmanager
def fresh_database(backing: Backing) -> Iterator[str]:
    """Create an empty database of one test's own on the shared server (no schema: the
    test migrates it, to any revision); yield its URL; drop it afterwards.

    Made through the direct URL where there is one: PgBouncer cannot create databases.
    """
    name = f"fresh_{uuid.uuid4().hex[:16]}"
    direct = backing.direct_database_url or backing.database_url

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(direct)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(direct)._replace(path=f"/{name}"))
    finally:
        asyncio.run(run(f'DROP DATABASE "{name}" WITH (FORCE)'))
