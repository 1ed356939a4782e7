"""A pooled asyncpg database with a deadline on every call (S29)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from keystile.errors import DependencyUnavailable

__all__ = ["Database", "PostgresRepository", "create_pool"]

# Failures that mean "PostgreSQL is not answering", as opposed to a bug in a query.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.AdminShutdownError,
    # A session the server ended mid-operation can leave asyncpg's protocol waiting for
    # an answer that never comes; the next statement on it fails with "cannot switch to
    # state 12; another operation (2) is in progress" (MagicStack/asyncpg#1069). The
    # pool terminates such a connection when it is released (its reset fails).
    asyncpg.InternalClientError,
)

T = TypeVar("T")


async def create_pool(
    dsn: str,
    *,
    size: int,
    connect_timeout: float,
    statement_timeout: float,
    statement_cache_size: int,
    pgbouncer: bool = False,
) -> asyncpg.Pool:
    """Open a fixed-size pool whose server side also enforces the statement timeout.

    With `pgbouncer` (PgBouncer in transaction mode in front of PostgreSQL) no startup
    parameter is sent (PgBouncer refuses them) and asyncpg's statement cache is off
    (each transaction may run on another server connection, where a named statement
    does not exist). asyncpg's `command_timeout` still bounds every statement from
    this side, cancelling it on the server; the server-side defaults are the
    operator's (`ALTER ROLE keystile SET statement_timeout = '5s'`, docs/scaling.md).

    A connection goes back to the pool without asyncpg's default reset query
    (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), which would be a
    second round trip after every statement: keystile leaves no session state behind
    (no SET, LISTEN, cursors or session-level advisory locks; its locks are
    transaction-scoped). An open transaction is still rolled back by asyncpg itself.
    """
    server_settings = (
        {}
        if pgbouncer
        else {
            "statement_timeout": str(int(statement_timeout * 1000)),
            "idle_in_transaction_session_timeout": str(int(statement_timeout * 4000)),
            "application_name": "keystile",
        }
    )
    return await asyncpg.create_pool(
        dsn,
        min_size=size,
        max_size=size,
        timeout=connect_timeout,
        command_timeout=statement_timeout,
        statement_cache_size=0 if pgbouncer else statement_cache_size,
        reset=_keep_session,
        server_settings=server_settings,
    )


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Reset nothing on release: see `create_pool`."""


class Database:
    """Run queries on a pool; any outage becomes `DependencyUnavailable("postgresql")`."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout: float, statement_timeout: float):
        self._pool = pool
        self._acquire_timeout = acquire_timeout
        self._statement_timeout = statement_timeout
        self._query_loggers: list[Callable[[Any], None]] = []
        self._reads: Database | None = None

    @property
    def reads(self) -> Database:
        """Where reads that tolerate replication lag go: the read replica, else this database.

        Never for a read that decides security (refresh rotation, revocation, session
        validity): those read the primary.
        """
        return self._reads or self

    def use_replica(self, replica: Database) -> None:
        """Send `reads` to `replica` (`database_read_url`)."""
        self._reads = replica

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    def add_query_logger(self, callback: Callable[[Any], None]) -> None:
        """Call `callback(asyncpg.LoggedQuery)` after every statement run through this database.

        For diagnostics and for tests that prove a path runs no SQL at all; it costs
        nothing while no logger is registered.
        """
        self._query_loggers.append(callback)

    def remove_query_logger(self, callback: Callable[[Any], None]) -> None:
        self._query_loggers.remove(callback)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """Hold one pooled connection for a unit of work."""
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout) as connection:
                if not self._query_loggers:
                    yield connection
                    return
                loggers = tuple(self._query_loggers)
                for logger in loggers:
                    connection.add_query_logger(logger)
                try:
                    yield connection
                finally:
                    for logger in loggers:
                        connection.remove_query_logger(logger)
        except _UNAVAILABLE as exc:
            raise DependencyUnavailable("postgresql") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """Hold one connection inside a transaction that commits when the block ends."""
        async with self.connection() as connection, connection.transaction():
            yield connection

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as connection:
            return await connection.fetchrow(query, *args, timeout=self._statement_timeout)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as connection:
            return list(await connection.fetch(query, *args, timeout=self._statement_timeout))

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.connection() as connection:
            return await connection.fetchval(query, *args, timeout=self._statement_timeout)

    async def fetch_one(
        self, convert: Callable[[asyncpg.Record], T], query: str, *args: Any
    ) -> T | None:
        """Return the first row of `query` as `convert` makes it, or None if there is none."""
        row = await self.fetchrow(query, *args)
        return None if row is None else convert(row)

    async def fetch_all(
        self, convert: Callable[[asyncpg.Record], T], query: str, *args: Any
    ) -> list[T]:
        """Return every row of `query` as `convert` makes it."""
        return [convert(row) for row in await self.fetch(query, *args)]

    async def execute(self, query: str, *args: Any) -> str:
        async with self.connection() as connection:
            return str(await connection.execute(query, *args, timeout=self._statement_timeout))

    async def execute_count(self, query: str, *args: Any) -> int:
        """Run an INSERT, UPDATE or DELETE; return how many rows it touched."""
        return _row_count(await self.execute(query, *args))

    async def delete_in_batches(self, lock_key: int, query: str, *args: Any, batch: int) -> int:
        """Repeat a batched DELETE until a batch comes back short; return how many rows went.

        `query` takes `*args` and then the batch size as its last parameter. Each batch
        is its own short transaction (row locks held briefly), under a transaction-scoped
        advisory lock: while one worker holds `lock_key`, the others return 0 at once.
        """
        deleted = 0
        while True:
            async with self.transaction() as connection:
                if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", lock_key):
                    return deleted
                status = await connection.execute(
                    query, *args, batch, timeout=self._statement_timeout
                )
            count = _row_count(status)
            deleted += count
            if count < batch:
                return deleted

    async def ping(self) -> None:
        """Raise `DependencyUnavailable` unless PostgreSQL answers a trivial query."""
        await self.fetchval("SELECT 1")


def _row_count(status: str) -> int:
    # asyncpg returns the command tag: "UPDATE 3", "DELETE 0", "INSERT 0 1".
    return int(status.rsplit(" ", 1)[-1])


class PostgresRepository:
    """Base of a repository that is SQL over one `Database` (as `self._db`)."""

    def __init__(self, database: Database) -> None:
        self._db = database
