"""Resolve where PostgreSQL and Redis are, starting embedded ones when none is configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from keystile.embedded import EmbeddedPostgres, EmbeddedRedis, ensure_secret_key_file
from keystile.settings import Settings, SettingsError, find_settings_file, load_settings

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["DatabaseUnreachable", "Runtime", "migrate", "project_root", "runtime"]

_log = logging.getLogger(__name__)


def project_root() -> Path:
    """Return the directory holding `alembic.ini` (the checkout, or the image's app dir)."""
    settings_file = find_settings_file()
    for candidate in (Path.cwd(), settings_file.parent if settings_file else None):
        if candidate is not None and (candidate / "alembic.ini").is_file():
            return candidate
    return Path(__file__).resolve().parents[2]


@dataclass
class Runtime:
    """Settings with every URL and the secret key resolved.

    `started`: the embedded servers this command started; `joined`: those it found
    already running (another command's, e.g. an earlier `make run`) and uses.
    """

    settings: Settings
    started: list[str] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)


@contextlib.contextmanager
def runtime(**overrides: object) -> Iterator[Runtime]:
    """Yield settings whose URLs point at real servers, embedded if need be.

    The resolved values are also exported as KEYSTILE_* variables, so Hypercorn's
    worker processes (which load settings themselves) see the same servers.
    """
    settings = load_settings(**overrides)
    if not settings.serving.allow_embedded:
        for key, url in (
            ("database_url", settings.database.url),
            ("redis_url", settings.redis.url),
        ):
            if url is None:
                raise SettingsError(
                    f"{key} (KEYSTILE_{key.upper()}): required, embedded servers are off"
                    " (allow_embedded = false)"
                )
    data_dir = settings.serving.data_dir.resolve()
    postgres = redis = None
    resolved: dict[str, str] = {}
    started: list[str] = []
    joined: list[str] = []
    try:
        if settings.database.url is None:
            postgres = EmbeddedPostgres(data_dir)
            resolved["database_url"] = postgres.start()
            (joined if postgres.joined else started).append(
                f"PostgreSQL (embedded) in {postgres.pgdata}"
            )
        if settings.redis.url is None:
            redis = EmbeddedRedis(data_dir)
            resolved["redis_url"] = redis.start()
            (joined if redis.joined else started).append(
                f"Redis (embedded) at {redis.url}, data in {redis.directory}"
            )
        if settings.secret_key is None and settings.secret_key_file is None:
            resolved["secret_key_file"] = str(ensure_secret_key_file(data_dir))
        for key, value in {**{k: str(v) for k, v in overrides.items()}, **resolved}.items():
            os.environ[f"KEYSTILE_{key.upper()}"] = value
        yield Runtime(load_settings(**overrides, **resolved), started, joined)
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()


def migrate(settings: Settings, revision: str = "head") -> None:
    """Bring the database schema to `revision` with alembic, then the enabled extensions'.

    An extension that owns tables names the directory of its alembic revisions in
    its `migrations` attribute; they keep their own history (version table
    `alembic_version_<name>`) and run only where the extension is enabled.
    """
    from alembic import command

    _check_reachable(settings)
    command.upgrade(_alembic_config(settings), revision)
    for name, location in _extension_migrations(settings):
        config = _alembic_config(settings)
        config.set_main_option("version_locations", str(location))
        config.attributes["version_table"] = f"alembic_version_{name}"
        command.upgrade(config, "head")


class DatabaseUnreachable(Exception):
    """PostgreSQL refused or did not answer the connection a migration needs."""


def _check_reachable(settings: Settings) -> None:
    """Connect once before migrating: an unreachable database is said in one line.

    Raise `DatabaseUnreachable` naming where (never the password) and why: refused,
    unknown host, no answer within `db_connect_timeout`, unknown database or role.
    """
    import asyncpg

    if settings.database.url is None:
        raise ValueError("database_url must be resolved before migrating")
    url = settings.database.url.get_secret_value()
    timeout = settings.database.connect_timeout

    async def connect() -> None:
        connection = await asyncpg.connect(url, timeout=timeout)
        await connection.close()

    try:
        asyncio.run(connect())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        if isinstance(exc, TimeoutError):
            reason = f"no answer within db_connect_timeout ({timeout:g} s)"
        else:
            reason = str(exc) or type(exc).__name__
        raise DatabaseUnreachable(
            f"database_url (KEYSTILE_DATABASE_URL): cannot connect to PostgreSQL"
            f" {_where(url)}: {reason}"
        ) from None


def _where(url: str) -> str:
    """Return host, port and database of a PostgreSQL URL, without user or password."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "with an unreadable database_url"
    if parts.scheme not in ("postgresql", "postgres"):
        return "with a database_url not of the form postgresql://user:password@host:port/db"
    host = parts.hostname or ",".join(parse_qs(parts.query).get("host", [])) or "localhost"
    return f"at {host}{port}, database {parts.path.lstrip('/') or '(default)'}"


def _alembic_config(settings: Settings) -> Config:
    from alembic.config import Config

    if settings.database.url is None:
        raise ValueError("database_url must be resolved before migrating")
    config = Config(str(project_root() / "alembic.ini"))
    config.attributes["database_url"] = settings.database.url.get_secret_value()
    config.attributes["pgbouncer"] = settings.database.pgbouncer
    # alembic's env.py runs its own event loop: call this from synchronous code only.
    return config


def _extension_migrations(settings: Settings) -> list[tuple[str, Path]]:
    if not settings.extensions:
        return []
    from keystile.extensions import load_extensions  # imports the web framework

    found = []
    for extension in load_extensions(settings.extensions):
        location = getattr(extension, "migrations", None)
        if location is not None:
            found.append((extension.name, Path(location)))
    return found
