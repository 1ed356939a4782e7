"""PostgreSQL repositories: raw SQL on a pooled asyncpg, one class per aggregate."""

from keystile.repositories.audit import PostgresAuditLog
from keystile.repositories.database import Database, create_pool
from keystile.repositories.refresh_tokens import PostgresRefreshTokenRepository
from keystile.repositories.sessions import PostgresSessionRepository, SessionRecord
from keystile.repositories.signing_keys import PostgresSigningKeyRepository
from keystile.repositories.users import PostgresUserRepository, User

__all__ = [
    "Database",
    "PostgresAuditLog",
    "PostgresRefreshTokenRepository",
    "PostgresSessionRepository",
    "PostgresSigningKeyRepository",
    "PostgresUserRepository",
    "SessionRecord",
    "User",
    "create_pool",
]
