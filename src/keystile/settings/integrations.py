"""Settings for what keystile exchanges with the outside: email, and machine access."""

from __future__ import annotations

import re
from email.utils import parseaddr
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from keystile.rates import Rate
from keystile.settings.groups import _empty_is_none, _flat_names, _Group


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
