"""Settings: `settings.toml` defaults, overridden by `KEYSTILE_*` environment variables.

Settings are grouped by concern (`settings.database.pool_size`, `settings.hashing.threads`,
`settings.limits.rates[Action.LOGIN]`), while every key keeps its flat name in
`settings.toml` and the environment (`db_pool_size`, `KEYSTILE_DB_POOL_SIZE`): each
grouped field lists its flat name as a `validation_alias`, and every source is
flattened into the groups before validation (see `flat_names`). A group may also be
written as a TOML table (`[database] pool_size = 20`) or as `KEYSTILE_DATABASE__POOL_SIZE`.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Collection, Mapping
from dataclasses import asdict
from email.utils import parseaddr
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from keystile.rates import Action, Rate, RateLimits

__all__ = [
    "Settings",
    "SettingsError",
    "find_settings_file",
    "flat_names",
    "load_settings",
    "read_secret_file",
]

_ENV_PREFIX = "KEYSTILE_"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the key."""


def find_settings_file() -> Path | None:
    """Return the settings file: $KEYSTILE_SETTINGS_FILE, ./settings.toml, or the project's."""
    explicit = os.environ.get(f"{_ENV_PREFIX}SETTINGS_FILE")
    if explicit:
        return Path(explicit)
    for candidate in (Path.cwd() / "settings.toml", _PROJECT_ROOT / "settings.toml"):
        if candidate.is_file():
            return candidate
    return None


def _flat_names(prefix: str = "", *, keep: Collection[str] = (), **renamed: str) -> ConfigDict:
    """A group's config: each field is also accepted by its historical flat name.

    The flat name is `renamed[name]`, else `name` itself if in `keep`, else
    `prefix + name` (`DatabaseSettings.pool_size` is `db_pool_size`).
    """

    def alias(name: str) -> AliasChoices | str:
        flat = renamed.get(name) or (name if name in keep else prefix + name)
        return name if flat == name else AliasChoices(name, flat)

    return ConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
        alias_generator=AliasGenerator(validation_alias=alias),
    )


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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
        "statement cache off, the statement timeout set per transaction",
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
    pool_size: int = Field(default=50, ge=1)
    cluster: bool = Field(
        default=False, description="url is a node of a Redis Cluster (or use redis+cluster://)"
    )

    _url_empty = field_validator("url", mode="before")(_empty_is_none)


class HashingSettings(_Group):
    """Password hashing (argon2id) and the threads that run it."""

    model_config = _flat_names(
        "hash_",
        keep={"login_wait_budget_ms"},
        memory_kib="argon2_memory_kib",
        time_cost="argon2_time_cost",
        parallelism="argon2_parallelism",
    )

    memory_kib: int = Field(default=19 * 1024, ge=8)
    time_cost: int = Field(default=2, ge=1)
    parallelism: int = Field(default=1, ge=1)
    threads: int = Field(default=0, ge=0, description="0 means CPU count / workers")
    login_wait_budget_ms: int = Field(
        default=1500, ge=0, le=60_000, description="longest expected wait for a hash thread"
    )


class PasswordSettings(_Group):
    model_config = _flat_names("password_")

    min_length: int = Field(default=8, ge=8)
    max_length: int = Field(default=1024, ge=64, le=1024)


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


class SessionSettings(_Group):
    """Cookie sessions."""

    model_config = _flat_names("session_", keep={"cookie_secure", "cookie_samesite"})

    cookie_secure: bool = True
    cookie_samesite: Literal["Lax", "Strict"] = "Lax"
    idle_timeout_seconds: int = Field(default=30 * 60, ge=60)
    absolute_lifetime_seconds: int = Field(default=12 * 3600, ge=60)
    touch_interval_seconds: int = Field(default=60, ge=1)
    cache_local_ttl_seconds: float = Field(default=5.0, gt=0, le=60)
    cache_redis_ttl_seconds: float = Field(default=60.0, gt=0, le=3600)


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


_DEFAULT_RATES = {
    Action.LOGIN: RateLimits(Rate(30, 60), Rate(10, 60)),
    Action.TOKEN: RateLimits(Rate(30, 60), Rate(10, 60)),
    Action.REFRESH: RateLimits(Rate(120, 60), Rate(60, 60)),
    Action.REGISTER: RateLimits(Rate(10, 3600), Rate(3, 3600)),
    Action.PASSWORD_CHANGE: RateLimits(Rate(10, 3600), Rate(5, 3600)),
    Action.PASSWORD_RESET: RateLimits(Rate(10, 3600), Rate(3, 3600)),
    Action.EMAIL_VERIFICATION: RateLimits(Rate(10, 3600), Rate(3, 3600)),
    Action.EMAIL_CHANGE: RateLimits(Rate(10, 3600), Rate(3, 3600)),
}
_SCOPES = ("per_ip", "per_account")


class LimitSettings(_Group):
    """Abuse protection: rate limits per action, and the failed-login backoff."""

    model_config = _flat_names(
        "login_",
        keep={"rates", "known_client_days"},
        redis_retry_seconds="rate_limit_redis_retry_seconds",
        client_free_failures="login_backoff_client_free_failures",
        account_free_failures="login_backoff_account_free_failures",
    )

    rates: dict[Action, RateLimits] = _DEFAULT_RATES
    redis_retry_seconds: float = Field(default=1.0, gt=0)
    client_free_failures: int = Field(default=5, ge=1)
    account_free_failures: int = Field(default=20, ge=1)
    backoff_base_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)
    failure_window_seconds: int = Field(default=3600, ge=1)
    known_client_days: int = Field(default=30, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _rates_over_defaults(cls, data: Any) -> Any:
        """Fill every action and scope not given from the defaults."""
        if not isinstance(data, dict) or not isinstance(data.get("rates"), Mapping):
            return data
        given = dict(data["rates"])
        rates: dict[Any, Any] = {}
        for action, default in _DEFAULT_RATES.items():
            entry = given.pop(action, {})  # a StrEnum: also finds the key "login"
            entry = asdict(entry) if isinstance(entry, RateLimits) else entry
            rates[action] = {**asdict(default), **entry} if isinstance(entry, Mapping) else entry
        return {**data, "rates": {**rates, **given}}  # unknown actions left to fail


class RetentionSettings(_Group):
    """What housekeeping deletes, and how often it runs."""

    model_config = _flat_names(
        keep={"housekeeping_interval_seconds"},
        audit_days="audit_retention_days",
        expired_record_hours="expired_record_retention_hours",
    )

    audit_days: int = Field(default=90, ge=1)
    housekeeping_interval_seconds: int = Field(default=3600, ge=0)
    expired_record_hours: int = Field(default=24, ge=1)


class TokenSettings(_Group):
    """API tokens: JWT access tokens, rotating refresh tokens, signing keys."""

    model_config = _flat_names(
        "token_",
        keep={
            "refresh_reuse_grace_seconds",
            "signing_key_refresh_seconds",
            "signing_key_promote_after_seconds",
            "jwks_max_age_seconds",
            "jwks_stale_while_revalidate_seconds",
        },
        access_ttl_seconds="access_token_ttl_seconds",
        refresh_idle_seconds="refresh_token_idle_seconds",
        refresh_absolute_seconds="refresh_token_absolute_seconds",
        verified_cache_size="verified_token_cache_size",
    )

    issuer: str = Field(default="http://127.0.0.1:8000", min_length=1)
    audience: str = Field(default="keystile", min_length=1)
    algorithm: Literal["EdDSA", "ES256"] = "EdDSA"
    scopes: list[str] = Field(default=["account"], min_length=1)
    access_ttl_seconds: int = Field(default=900, ge=60, le=24 * 3600)
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    refresh_idle_seconds: int = Field(default=14 * 86400, ge=60)
    refresh_absolute_seconds: int = Field(default=30 * 86400, ge=60)
    refresh_reuse_grace_seconds: int = Field(default=10, ge=0, le=120)
    epoch_cache_seconds: float = Field(default=5.0, gt=0, le=60)
    epoch_redis_seconds: float = Field(default=60.0, gt=0)
    verified_cache_size: int = Field(default=10_000, ge=0)
    signing_key_refresh_seconds: float = Field(default=60.0, gt=0)
    signing_key_promote_after_seconds: int = Field(default=3600, ge=0)
    jwks_max_age_seconds: int = Field(default=300, ge=0)
    jwks_stale_while_revalidate_seconds: int = Field(default=60, ge=0)

    @field_validator("scopes")
    @classmethod
    def _scopes_are_tokens(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not scope or not all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in scope):
                raise ValueError(f"scope {scope!r}: printable ASCII without spaces or quotes")
        return value

    @property
    def longest_access_token_seconds(self) -> int:
        """How long after signing a token may still verify: its lifetime plus the leeway."""
        return self.access_ttl_seconds + self.leeway_seconds


class EmailSettings(_Group):
    """Email: verification, password reset, email change, notices, and the outbox."""

    model_config = _flat_names(
        keep={
            "public_url",
            "mail_from",
            "mail_site_name",
            "mail_template_dir",
            "smtp_url",
            "smtp_username",
            "smtp_password",
            "smtp_starttls",
            "smtp_timeout_seconds",
            "verify_token_ttl_seconds",
            "reset_token_ttl_seconds",
            "undo_token_ttl_seconds",
            "notify_new_device",
            "notify_password_changed",
            "notify_email_changed",
            "outbox_sender_enabled",
            "outbox_poll_seconds",
            "outbox_batch_size",
            "outbox_claim_lease_seconds",
            "outbox_max_attempts",
            "outbox_retry_base_seconds",
            "outbox_retry_max_seconds",
            "outbox_retention_hours",
        },
        verification="email_verification",
    )

    public_url: str = Field(default="http://127.0.0.1:8000", min_length=1, max_length=200)
    verification: Literal["off", "optional", "required"] = "optional"
    mail_from: str = Field(default="keystile <no-reply@localhost>", max_length=320)
    mail_site_name: str = Field(default="keystile", min_length=1, max_length=100)
    mail_template_dir: Path | None = None
    smtp_url: SecretStr | None = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: Literal["required", "opportunistic", "off"] = "required"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    verify_token_ttl_seconds: int = Field(default=24 * 3600, ge=300, le=30 * 86400)
    reset_token_ttl_seconds: int = Field(default=30 * 60, ge=60, le=86400)
    undo_token_ttl_seconds: int = Field(default=7 * 86400, ge=3600, le=30 * 86400)
    notify_new_device: bool = True
    notify_password_changed: bool = True
    notify_email_changed: bool = True
    outbox_sender_enabled: bool = True
    outbox_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    outbox_batch_size: int = Field(default=10, ge=1, le=1000)
    outbox_claim_lease_seconds: float = Field(default=60.0, ge=1)
    outbox_max_attempts: int = Field(default=8, ge=1, le=100)
    outbox_retry_base_seconds: float = Field(default=30.0, gt=0)
    outbox_retry_max_seconds: float = Field(default=3600.0, gt=0)
    outbox_retention_hours: int = Field(default=7 * 24, ge=1)

    _mail_empty = field_validator(
        "smtp_url", "smtp_username", "smtp_password", "mail_template_dir", mode="before"
    )(_empty_is_none)

    @field_validator("public_url")
    @classmethod
    def _public_url_is_a_base(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL, e.g. https://auth.example.com")
        if parts.query or parts.fragment or any(c in value for c in "\r\n\t "):
            raise ValueError("a base URL without query, fragment or spaces")
        return value.rstrip("/")

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parts = urlsplit(value.get_secret_value())
            if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
                raise ValueError(
                    "smtp://host[:port] or smtps://host[:port], user:password@ optional"
                )
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from_is_an_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError(f"{value!r}: an address like 'Example <no-reply@example.com>'")
        return value


class MachineSettings(_Group):
    """Machine access: API keys, OAuth 2.0 clients, roles, the admin API."""

    model_config = _flat_names(
        keep={
            "api_key_max_days",
            "api_keys_per_user",
            "api_key_touch_interval_seconds",
            "api_key_cache_local_ttl_seconds",
            "api_key_cache_redis_ttl_seconds",
            "client_token_ttl_seconds",
            "rate_limit_client_credentials_per_ip",
            "rate_limit_client_credentials_per_client",
            "extra_roles",
            "reauth_max_age_seconds",
        }
    )

    api_key_max_days: int = Field(default=365, ge=1, le=3650)
    api_keys_per_user: int = Field(default=50, ge=1, le=1000)
    api_key_touch_interval_seconds: int = Field(default=300, ge=1)
    api_key_cache_local_ttl_seconds: float = Field(default=5.0, gt=0, le=60)
    api_key_cache_redis_ttl_seconds: float = Field(default=60.0, gt=0, le=3600)
    client_token_ttl_seconds: int = Field(default=900, ge=60, le=24 * 3600)
    rate_limit_client_credentials_per_ip: str = "600/minute"
    rate_limit_client_credentials_per_client: str = "600/minute"
    extra_roles: list[str] = Field(default=[])
    reauth_max_age_seconds: int = Field(default=600, ge=10, le=24 * 3600)

    @field_validator(
        "rate_limit_client_credentials_per_ip", "rate_limit_client_credentials_per_client"
    )
    @classmethod
    def _machine_rate(cls, value: str) -> str:
        Rate.parse(value)
        return value

    @field_validator("extra_roles")
    @classmethod
    def _roles_are_names(cls, value: list[str]) -> list[str]:
        for role in value:
            if not re.fullmatch(r"[a-z][a-z0-9_.-]{0,63}", role):
                raise ValueError(f"role {role!r}: lowercase letters, digits, '_', '.', '-'")
        return value


class MfaSettings(_Group):
    """Second factors: TOTP, recovery codes, passkeys and the mfa_token (docs/mfa.md)."""

    model_config = _flat_names("mfa_")

    issuer: str = Field(default="keystile", min_length=1, max_length=100)
    challenge_ttl_seconds: int = Field(default=300, ge=30, le=1800)
    free_failures: int = Field(default=5, ge=1, le=100)
    token_attempts: int = Field(default=5, ge=1, le=20)
    rp_id: str | None = Field(default=None, max_length=253)
    rp_name: str = Field(default="keystile", min_length=1, max_length=100)
    passkeys_per_user: int = Field(default=20, ge=1, le=100)

    _rp_id_empty = field_validator("rp_id", mode="before")(_empty_is_none)


class Settings(BaseSettings):
    """Every knob keystile has, by concern. `settings.toml` documents each one."""

    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    serving: ServingSettings = ServingSettings()
    logs: LogSettings = LogSettings()
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    # Secrets: the environment or a 0600 file only; embedded mode makes one.
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None
    hashing: HashingSettings = HashingSettings()
    passwords: PasswordSettings = PasswordSettings()
    cache: CacheSettings = CacheSettings()
    sessions: SessionSettings = SessionSettings()
    http_cache: HttpCacheSettings = HttpCacheSettings()
    extensions: list[str] = Field(default=[])
    limits: LimitSettings = LimitSettings()
    retention: RetentionSettings = RetentionSettings()
    tokens: TokenSettings = TokenSettings()
    machine: MachineSettings = MachineSettings()
    email: EmailSettings = EmailSettings()
    mfa: MfaSettings = MfaSettings()

    _secret_key_empty = field_validator("secret_key", mode="before")(_empty_is_none)

    @field_validator("extensions")
    @classmethod
    def _extensions_are_import_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            module, _, attribute = path.partition(":")
            if not module or not attribute:
                raise ValueError(f"{path!r} is not of the form 'package.module:Name'")
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            _Grouped(init_settings),
            env_settings,  # top-level keys, and groups as KEYSTILE_<GROUP>__<KEY>
            _Grouped(_FlatEnvironment(settings_cls)),
        ]
        toml_file = find_settings_file()
        if toml_file is not None:
            sources.append(_Grouped(TomlConfigSettingsSource(settings_cls, toml_file=toml_file)))
        return tuple(sources)

    @property
    def embedded(self) -> bool:
        """True when PostgreSQL or Redis must be started locally."""
        return self.database.url is None or self.redis.url is None

    @property
    def hash_thread_count(self) -> int:
        """Hash threads per worker: by default the workers share the cores between them.

        More memory-hard hashes at once than cores only thrash the caches: each hash
        then costs more CPU and the event loops starve (measured by `make bench`).
        """
        return self.hashing.threads or max(1, (os.cpu_count() or 1) // self.serving.workers)

    def read_secret_key(self) -> bytes | None:
        """Return the secret key from the environment or the 0600 key file, if any."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        if self.secret_key_file is None:
            return None
        return read_secret_file(self.secret_key_file)


@cache
def flat_names() -> dict[str, tuple[str, ...]]:
    """Return every flat key (`db_pool_size`) and the path of the field it sets.

    The path is `("database", "pool_size")`, or for a rate limit
    `("limits", "rates", "login", "per_ip")`; top-level fields map to themselves.
    """
    names: dict[str, tuple[str, ...]] = {}
    for group, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, _Group)):
            names[group] = (group,)
            continue
        for name, sub in model.model_fields.items():
            if name == "rates":
                continue
            names[_flat_name(name, sub)] = (group, name)
    for action in Action:
        for scope in _SCOPES:
            names[f"rate_limit_{action.value}_{scope}"] = ("limits", "rates", action.value, scope)
    return names


def _flat_name(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        last = alias.choices[-1]
        return last if isinstance(last, str) else name
    return name


@cache
def _complex_flat_names() -> frozenset[str]:
    """Flat keys whose environment value is JSON (lists), as pydantic-settings reads them."""
    complex_names = set()
    for flat, path in flat_names().items():
        if len(path) != 2:
            continue
        sub = Settings.model_fields[path[0]].annotation
        assert isinstance(sub, type)
        assert issubclass(sub, BaseModel)
        if get_origin(sub.model_fields[path[1]].annotation) in (list, dict):
            complex_names.add(flat)
    return frozenset(complex_names)


def _grouped(values: Mapping[str, Any]) -> dict[str, Any]:
    """Move flat keys (`db_pool_size`) into their groups (`database.pool_size`)."""
    names = flat_names()
    grouped: dict[str, Any] = {}
    flat_items = []
    for key, value in values.items():
        path = names.get(key)
        if path is None or len(path) == 1:
            grouped[key] = value
        else:
            flat_items.append((path, value))
    for path, value in flat_items:  # after nested values, so a flat key wins within a source
        target = grouped
        for part in path[:-1]:
            existing = target.get(part)
            if isinstance(existing, BaseModel):
                existing = existing.model_dump()
            target[part] = target = dict(existing) if isinstance(existing, Mapping) else {}
        target[path[-1]] = value
    return grouped


class _Grouped(PydanticBaseSettingsSource):
    """Another source's values, with flat keys moved into their groups."""

    def __init__(self, source: PydanticBaseSettingsSource) -> None:
        super().__init__(source.settings_cls)
        self._source = source

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return _grouped(self._source())

    def __repr__(self) -> str:
        return f"_Grouped({self._source!r})"


class _FlatEnvironment(PydanticBaseSettingsSource):
    """`KEYSTILE_<FLAT KEY>` variables for grouped fields (lists as JSON)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environment = {key.upper(): value for key, value in os.environ.items()}
        complex_names = _complex_flat_names()
        values: dict[str, Any] = {}
        for flat, path in flat_names().items():
            raw = environment.get(f"{_ENV_PREFIX}{flat.upper()}")
            if raw is None or len(path) == 1:
                continue
            values[flat] = _json_or_text(raw) if flat in complex_names else raw
        return values


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # validation then says what it should have been


def read_secret_file(path: Path) -> bytes:
    """Read a secret from a file that only its owner can read."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"secret_key_file: {path} must not be readable by others (chmod 600)")
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise SettingsError(f"secret_key_file: {path} holds fewer than 32 bytes")
    return key


def setting_name(location: tuple[str | int, ...]) -> str:
    """Return the flat key a validation error's location points at (`db_pool_size`)."""
    parts = tuple(str(part) for part in location)
    by_path = {path: flat for flat, path in flat_names().items()}
    for end in range(len(parts), 0, -1):
        flat = by_path.get(parts[:end])
        if flat is not None:
            return flat
    return ".".join(parts) or "settings"


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning a validation failure into one error naming each bad key."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = setting_name(error["loc"])
            env = f"{_ENV_PREFIX}{key.upper().replace('.', '__')}"
            problems.append(f"{key} ({env}): {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
