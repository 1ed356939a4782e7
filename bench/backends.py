"""PostgreSQL and Redis for a bench run: embedded by default, or the URLs given.

Embedded servers live under their own data directory (`var/bench` by default), never
the developer's `var/`, because the bench deletes and reseeds the `bench-user-*` rows.
Both keystile and the Flask baseline are pointed at the same servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis

from keystile.bootstrap import CREDENTIALS_NAMESPACE
from keystile.embedded import EmbeddedPostgres, EmbeddedRedis
from keystile.runtime import migrate
from keystile.settings import load_settings

__all__ = ["Backends", "backends", "second_store"]


@dataclass(frozen=True, slots=True)
class Backends:
    """Where the data lives, and which processes to meter for database CPU."""

    database_url: str
    redis_url: str
    embedded: bool
    pids: tuple[int, ...] = field(default_factory=tuple)
    pid_names: tuple[str, ...] = field(default_factory=tuple)  # "postgresql", "redis" per pid


def _postgres_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _redis_pid(directory: Path) -> int | None:
    try:
        return int(json.loads((directory / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


@contextlib.contextmanager
def backends(data_dir: Path, database_url: str | None, redis_url: str | None) -> Iterator[Backends]:
    """Yield migrated backends; stop whatever this call started on the way out."""
    postgres = redis = None
    try:
        if database_url is None:
            postgres = EmbeddedPostgres(data_dir)
            database_url = postgres.start()
        if redis_url is None:
            redis = EmbeddedRedis(data_dir, persist=False)
            redis_url = redis.start()
        migrate(load_settings(database_url=database_url, redis_url=redis_url))
        named = [
            (name, pid)
            for name, pid in (
                ("postgresql", _postgres_pid(postgres.pgdata) if postgres else None),
                ("redis", _redis_pid(redis.directory) if redis else None),
            )
            if pid is not None
        ]
        yield Backends(
            database_url,
            redis_url,
            postgres is not None,
            tuple(pid for _, pid in named),
            tuple(name for name, _ in named),
        )
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


def forget_credentials(redis_url: str) -> int:
    """Delete the credential-cache entries in `redis_url`'s database; return how many.

    A small user store comes round to the same users again within the credential
    cache's lifetime; dropping the cached successes first keeps its logins cold.
    """
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{CREDENTIALS_NAMESPACE}:*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def second_store(stores: Backends, suffix: str) -> Backends:
    """Return backends for a second, migrated database on the same servers.

    The scale scenario runs a second keystile on it (a small user store) next to the
    main one, so the two stores can be measured in interleaved rounds. It gets its own
    Redis database number too, so the two keystiles never share a cache entry.
    """
    main_db = urlsplit(stores.database_url).path.lstrip("/") or "postgres"
    name = f"{main_db}_{suffix}"

    async def _create() -> None:
        connection = await asyncpg.connect(stores.database_url, timeout=10)
        try:
            exists = await connection.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", name, timeout=10
            )
            if not exists:
                await connection.execute(f'CREATE DATABASE "{name}"', timeout=60)
        finally:
            await connection.close()

    asyncio.run(_create())
    database_url = _with_path(stores.database_url, f"/{name}")
    redis_url = _with_path(stores.redis_url, "/1")
    migrate(load_settings(database_url=database_url, redis_url=redis_url))
    return replace(stores, database_url=database_url, redis_url=redis_url)
