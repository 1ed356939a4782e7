"""Infrastructure settings: serving, logs, PostgreSQL, Redis, the caches, HTTP caches."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from keystile.settings.groups import _empty_is_none, _flat_names, _Group


class ServingSettings(_Group):
    """How `keystile serve` listens, and what a request may be."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    data_dir: Path = Path("var")
    allow_embedded: bool = True
    max_body_bytes: int = Field(default=16 * 1024, ge=1024)
    max_header_bytes: int = Field(default=8 * 1024, ge=1024)
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    forwarded_header: Literal["X-Forwarded-For", "Forwarded"] = "X-Forwarded-For"
    metrics_token: SecretStr | None = None
    drain_delay_seconds: float = Field(default=0.0, ge=0, le=300)

    _metrics_token_empty = field_validator("metrics_token", mode="before")(_empty_is_none)


class LogSettings(_Group):
    """The log level, and the line format: json for machines, text for people."""

    model_config = _flat_names("log_")

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class DatabaseSettings(_Group):
    """PostgreSQL; no url: an embedded server under data_dir."""

    model_config = _flat_names("db_", url="database_url", read_url="database_read_url")

    url: SecretStr | None = None
    pool_size: int = Field(default=10, ge=1, le=500)
    connect_timeout: float = Field(default=5.0, gt=0)
    acquire_timeout: float = Field(default=2.0, gt=0)
    statement_timeout: float = Field(default=5.0, gt=0)
    statement_cache_size: int = Field(default=256, ge=0)
    pgbouncer: bool = Field(
        default=False,
        description="url is PgBouncer in transaction mode: no startup parameters, "
        "statement cache off; statements are bounded by the client's statement_timeout "
        "(set the server's on the role: docs/scaling.md)",
    )
    read_url: SecretStr | None = Field(
        default=None, description="a read replica for reads that tolerate lag (none: url)"
    )
    outage_grace_seconds: float = Field(
        default=300.0,
        ge=0,
        le=86_400,
        description="how long authenticated reads go on from Redis while PostgreSQL is down",
    )

    _url_empty = field_validator("url", "read_url", mode="before")(_empty_is_none)


class RedisSettings(_Group):
    """Redis; no url: an embedded server under data_dir."""

    model_config = _flat_names("redis_")

    url: SecretStr | None = None
    socket_timeout: float = Field(default=0.5, gt=0)
    connect_timeout: float = Field(default=0.5, gt=0)
    pool_size: int = Field(
        default=50,
        ge=2,
        description="connections per worker, the invalidation listener's one included "
        "(with Redis Cluster: per node, and pool_size - 2 commands run at once)",
    )
    acquire_timeout: float = Field(
        default=2.0,
        gt=0,
        description="seconds a command waits for a pooled connection while all pool_size "
        "are in use; past it, Redis counts as unavailable",
    )
    cluster: bool = Field(
        default=False, description="url is a node of a Redis Cluster (or use redis+cluster://)"
    )

    _url_empty = field_validator("url", mode="before")(_empty_is_none)


class CacheSettings(_Group):
    """The login caches: credential HMACs, users by email."""

    model_config = _flat_names(
        credential_ttl_seconds="credential_cache_ttl_seconds",
        user_local_ttl_seconds="user_cache_local_ttl_seconds",
        user_redis_ttl_seconds="user_cache_redis_ttl_seconds",
    )

    credential_ttl_seconds: float = Field(default=120.0, ge=0)
    user_local_ttl_seconds: float = Field(default=5.0, gt=0)
    user_redis_ttl_seconds: float = Field(default=30.0, gt=0)


class HttpCacheSettings(_Group):
    """Shared HTTP caches (Varnish, a CDN) to purge after writes."""

    purge_urls: list[str] = Field(default=[])
    purge_timeout_seconds: float = Field(default=2.0, gt=0)

    @field_validator("purge_urls")
    @classmethod
    def _purge_urls_are_http(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value
