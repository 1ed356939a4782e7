"""Alembic environment: async, and reading the same settings as keystile itself."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from keystile.settings import load_settings

config = context.config


def _database_url() -> str:
    # `keystile migrate` passes the URL it resolved (possibly an embedded server).
    url = config.attributes.get("database_url")
    if url is None:
        configured = load_settings().database.url
        if configured is None:
            raise SystemExit("KEYSTILE_DATABASE_URL is not set; run `keystile migrate` instead")
        url = configured.get_secret_value()
    return str(url).replace("postgresql://", "postgresql+asyncpg://", 1)


# Every replica runs `keystile migrate` (or `serve`, which migrates) as it starts: they
# take turns on this session-level lock, so a schema is never migrated twice at once.
_MIGRATION_LOCK_ID = 0x6B657973  # "keys"


# An extension's migrations keep their own history (`keystile migrate` sets this).
_VERSION_TABLE = config.attributes.get("version_table", "alembic_version")


# Behind PgBouncer in transaction mode (`db_pgbouncer = true`) a session-level lock would
# stay on a pooled server connection for good, and named prepared statements may vanish
# between transactions: there, every migration runs in one transaction under a
# transaction-scoped lock, with no statement cache.
_PGBOUNCER = bool(config.attributes.get("pgbouncer", False))


def _run(connection: Connection) -> None:
    if _PGBOUNCER:
        context.configure(
            connection=connection,
            target_metadata=None,
            transaction_per_migration=False,
            version_table=_VERSION_TABLE,
        )
        with context.begin_transaction():
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})")
            context.run_migrations()
        return
    connection.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK_ID})")
    connection.commit()  # the lock is the session's: it outlives this transaction
    context.configure(
        connection=connection,
        target_metadata=None,
        transaction_per_migration=True,
        version_table=_VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    connect_args: dict[str, object] = {}
    if _PGBOUNCER:
        connect_args = {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": lambda: f"__keystile_{uuid.uuid4().hex}__",
        }
    engine = create_async_engine(
        _database_url(), poolclass=pool.NullPool, connect_args=connect_args
    )
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), literal_binds=True, version_table=_VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
