"""Settings: `settings.toml` defaults, overridden by `KEYSTILE_*` environment variables."""

from __future__ import annotations

import os
import stat
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from keystile.stores.rate_limits import Rate

__all__ = ["Settings", "SettingsError", "find_settings_file", "load_settings"]

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


class Settings(BaseSettings):
    """Every knob keystile has. `settings.toml` documents each one."""

    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    # --- serving ---
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    data_dir: Path = Path("var")
    allow_embedded: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    max_body_bytes: int = Field(default=16 * 1024, ge=1024)
    max_header_bytes: int = Field(default=8 * 1024, ge=1024)
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    forwarded_header: Literal["X-Forwarded-For", "Forwarded"] = "X-Forwarded-For"

    # --- operations ---
    metrics_token: SecretStr | None = None
    drain_delay_seconds: float = Field(default=0.0, ge=0, le=300)

    # --- PostgreSQL (empty url: an embedded server under data_dir) ---
    database_url: SecretStr | None = None
    db_pool_size: int = Field(default=10, ge=1, le=500)
    db_connect_timeout: float = Field(default=5.0, gt=0)
    db_acquire_timeout: float = Field(default=2.0, gt=0)
    db_statement_timeout: float = Field(default=5.0, gt=0)
    db_statement_cache_size: int = Field(default=256, ge=0)

    # --- Redis (empty url: an embedded server under data_dir) ---
    redis_url: SecretStr | None = None
    redis_socket_timeout: float = Field(default=0.5, gt=0)
    redis_connect_timeout: float = Field(default=0.5, gt=0)
    redis_pool_size: int = Field(default=50, ge=1)

    # --- secrets (environment or a 0600 file only; embedded mode makes one) ---
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None

    # --- password hashing (argon2id) ---
    argon2_memory_kib: int = Field(default=19 * 1024, ge=8)
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_parallelism: int = Field(default=1, ge=1)
    hash_threads: int = Field(default=0, ge=0, description="0 means CPU count / workers")
    hash_thread_niceness: int = Field(default=10, ge=0, le=19)
    hash_queue_limit: int = Field(default=0, ge=0, description="0 means 4 x hash_threads")
    hash_retry_after_seconds: int = Field(default=1, ge=1)
    password_min_length: int = Field(default=8, ge=8)
    password_max_length: int = Field(default=1024, ge=64, le=1024)

    # --- login caches (credential HMACs, users by email) ---
    credential_cache_ttl_seconds: float = Field(default=120.0, ge=0)
    user_cache_local_ttl_seconds: float = Field(default=5.0, gt=0)
    user_cache_redis_ttl_seconds: float = Field(default=30.0, gt=0)

    # --- cookie sessions ---
    cookie_secure: bool = True
    cookie_samesite: Literal["Lax", "Strict"] = "Lax"
    session_idle_timeout_seconds: int = Field(default=30 * 60, ge=60)
    session_absolute_lifetime_seconds: int = Field(default=12 * 3600, ge=60)
    session_touch_interval_seconds: int = Field(default=60, ge=1)
    session_cache_local_ttl_seconds: float = Field(default=5.0, gt=0, le=60)
    session_cache_redis_ttl_seconds: float = Field(default=60.0, gt=0, le=3600)

    # --- HTTP caching and extensions ---
    purge_urls: list[str] = Field(default=[])
    purge_timeout_seconds: float = Field(default=2.0, gt=0)
    extensions: list[str] = Field(default=[])

    # --- abuse protection: rate limits ("N/period" or "off"), login backoff, audit ---
    rate_limit_login_per_ip: str = "30/minute"
    rate_limit_login_per_account: str = "10/minute"
    rate_limit_token_per_ip: str = "30/minute"  # noqa: S105 - a rate
    rate_limit_token_per_account: str = "10/minute"  # noqa: S105 - a rate
    rate_limit_refresh_per_ip: str = "120/minute"
    rate_limit_refresh_per_account: str = "60/minute"
    rate_limit_register_per_ip: str = "10/hour"
    rate_limit_register_per_account: str = "3/hour"
    rate_limit_password_change_per_ip: str = "10/hour"  # noqa: S105 - a rate
    rate_limit_password_change_per_account: str = "5/hour"  # noqa: S105 - a rate
    rate_limit_redis_retry_seconds: float = Field(default=1.0, gt=0)
    login_backoff_client_free_failures: int = Field(default=5, ge=1)
    login_backoff_account_free_failures: int = Field(default=20, ge=1)
    login_backoff_base_seconds: float = Field(default=1.0, gt=0)
    login_backoff_max_seconds: float = Field(default=300.0, gt=0)
    login_failure_window_seconds: int = Field(default=3600, ge=1)
    known_client_days: int = Field(default=30, ge=1)
    audit_retention_days: int = Field(default=90, ge=1)
    housekeeping_interval_seconds: int = Field(default=3600, ge=0)
    expired_record_retention_hours: int = Field(default=24, ge=1)

    # --- API tokens (JWT access tokens, rotating refresh tokens, signing keys) ---
    token_issuer: str = Field(default="http://127.0.0.1:8000", min_length=1)
    token_audience: str = Field(default="keystile", min_length=1)
    token_algorithm: Literal["EdDSA", "ES256"] = "EdDSA"  # noqa: S105
    token_scopes: list[str] = Field(default=["account"], min_length=1)
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=24 * 3600)
    token_leeway_seconds: int = Field(default=30, ge=0, le=300)
    refresh_token_idle_seconds: int = Field(default=14 * 86400, ge=60)
    refresh_token_absolute_seconds: int = Field(default=30 * 86400, ge=60)
    refresh_reuse_grace_seconds: int = Field(default=10, ge=0, le=120)
    token_epoch_cache_seconds: float = Field(default=5.0, gt=0, le=60)
    token_epoch_redis_seconds: float = Field(default=60.0, gt=0)
    verified_token_cache_size: int = Field(default=10_000, ge=0)
    signing_key_refresh_seconds: float = Field(default=60.0, gt=0)
    signing_key_promote_after_seconds: int = Field(default=3600, ge=0)
    jwks_max_age_seconds: int = Field(default=300, ge=0)
    jwks_stale_while_revalidate_seconds: int = Field(default=60, ge=0)

    # --- email: verification, password reset, email change, notices, the outbox ---
    public_url: str = Field(default="http://127.0.0.1:8000", min_length=1, max_length=200)
    email_verification: Literal["off", "optional", "required"] = "optional"
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
    rate_limit_password_reset_per_ip: str = "10/hour"  # noqa: S105 - a rate
    rate_limit_password_reset_per_account: str = "3/hour"  # noqa: S105 - a rate
    rate_limit_email_verification_per_ip: str = "10/hour"
    rate_limit_email_verification_per_account: str = "3/hour"
    rate_limit_email_change_per_ip: str = "10/hour"
    rate_limit_email_change_per_account: str = "3/hour"

    @field_validator(
        "smtp_url", "smtp_username", "smtp_password", "mail_template_dir", mode="before"
    )
    @classmethod
    def _mail_empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

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

    @field_validator(
        "rate_limit_password_reset_per_ip",
        "rate_limit_password_reset_per_account",
        "rate_limit_email_verification_per_ip",
        "rate_limit_email_verification_per_account",
        "rate_limit_email_change_per_ip",
        "rate_limit_email_change_per_account",
    )
    @classmethod
    def _mail_rate(cls, value: str) -> str:
        Rate.parse(value)
        return value

    @field_validator("database_url", "redis_url", "secret_key", "metrics_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("purge_urls")
    @classmethod
    def _purge_urls_are_http(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value

    @field_validator("extensions")
    @classmethod
    def _extensions_are_import_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            module, _, attribute = path.partition(":")
            if not module or not attribute:
                raise ValueError(f"{path!r} is not of the form 'package.module:Name'")
        return value

    @field_validator(
        "rate_limit_login_per_ip",
        "rate_limit_login_per_account",
        "rate_limit_token_per_ip",
        "rate_limit_token_per_account",
        "rate_limit_refresh_per_ip",
        "rate_limit_refresh_per_account",
        "rate_limit_register_per_ip",
        "rate_limit_register_per_account",
        "rate_limit_password_change_per_ip",
        "rate_limit_password_change_per_account",
    )
    @classmethod
    def _is_rate(cls, value: str) -> str:
        Rate.parse(value)  # raises ValueError with an example of the format
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
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = find_settings_file()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @field_validator("token_scopes")
    @classmethod
    def _scopes_are_tokens(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not scope or not all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in scope):
                raise ValueError(f"scope {scope!r}: printable ASCII without spaces or quotes")
        return value

    @property
    def embedded(self) -> bool:
        """True when PostgreSQL or Redis must be started locally."""
        return self.database_url is None or self.redis_url is None

    def rate_limit(self, action: str, scope: str) -> Rate | None:
        """Return the limit for `action` ("login", ...) per `scope` ("ip" or "account")."""
        return Rate.parse(getattr(self, f"rate_limit_{action}_per_{scope}"))

    @property
    def hash_thread_count(self) -> int:
        """Hash threads per worker: by default the workers share the cores between them.

        More memory-hard hashes at once than cores only thrash the caches: each hash
        then costs more CPU and the event loops starve (measured by `make bench`).
        """
        return self.hash_threads or max(1, (os.cpu_count() or 1) // self.workers)

    @property
    def hash_queue_bound(self) -> int:
        return self.hash_queue_limit or 4 * self.hash_thread_count

    @property
    def longest_access_token_seconds(self) -> int:
        """How long after signing a token may still verify: its lifetime plus the leeway."""
        return self.access_token_ttl_seconds + self.token_leeway_seconds

    def read_secret_key(self) -> bytes | None:
        """Return the secret key from the environment or the 0600 key file, if any."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        if self.secret_key_file is None:
            return None
        return read_secret_file(self.secret_key_file)


def read_secret_file(path: Path) -> bytes:
    """Read a secret from a file that only its owner can read."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"secret_key_file: {path} must not be readable by others (chmod 600)")
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise SettingsError(f"secret_key_file: {path} holds fewer than 32 bytes")
    return key


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning a validation failure into one error naming each bad key."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "settings"
            env = f"{_ENV_PREFIX}{key.upper()}"
            problems.append(f"{key} ({env}): {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
