"""Account security settings: hashing, passwords, sessions, abuse limits, retention,
tokens and second factors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from keystile.rates import Action, Rate, RateLimits
from keystile.settings.groups import _empty_is_none, _flat_names, _Group

# OWASP's argon2id configurations (Password Storage Cheat Sheet), each equally strong:
# the least memory in KiB for a time cost; t >= 5 needs 7 MiB. keystile's default is
# the second, m=19 MiB with t=2 (S4).
_OWASP_MEMORY_KIB_FOR_TIME_COST = {1: 46 * 1024, 2: 19 * 1024, 3: 12 * 1024, 4: 9 * 1024}
_OWASP_MEMORY_KIB_FROM_T5 = 7 * 1024


def owasp_minimum_memory_kib(time_cost: int) -> int:
    """Return the least argon2id memory (KiB) OWASP accepts with `time_cost` iterations."""
    return _OWASP_MEMORY_KIB_FOR_TIME_COST.get(time_cost, _OWASP_MEMORY_KIB_FROM_T5)


class HashingSettings(_Group):
    """Password hashing (argon2id) and the threads that run it."""

    model_config = _flat_names(
        "hash_",
        keep={"login_wait_budget_ms"},
        memory_kib="argon2_memory_kib",
        time_cost="argon2_time_cost",
        parallelism="argon2_parallelism",
        allow_weak="argon2_allow_weak",
    )

    memory_kib: int = Field(default=19 * 1024, ge=8)
    time_cost: int = Field(default=2, ge=1)
    parallelism: int = Field(default=1, ge=1)
    allow_weak: bool = Field(
        default=False,
        description=(
            "accept argon2id parameters below OWASP's minimum; for test suites only,"
            " never where real passwords are stored"
        ),
    )
    threads: int = Field(default=0, ge=0, description="0 means CPU count / workers")
    login_wait_budget_ms: int = Field(
        default=1500,
        ge=0,
        le=60_000,
        description=(
            "longest expected wait for a hash thread; a login that comes back after a"
            " refusal may wait up to twice this"
        ),
    )

    @model_validator(mode="after")
    def _at_least_owasp_minimum(self) -> HashingSettings:
        # S4: a deployment cannot weaken the stored hashes by a typo or a copied test config.
        least = owasp_minimum_memory_kib(self.time_cost)
        if self.memory_kib < least and not self.allow_weak:
            raise ValueError(
                f"argon2_memory_kib = {self.memory_kib} with argon2_time_cost ="
                f" {self.time_cost} is below OWASP's minimum for argon2id ({least} KiB at"
                f" that time cost; the default is 19456 KiB with a time cost of 2). Raise"
                f" them, or set argon2_allow_weak = true in a test suite"
            )
        return self


class PasswordSettings(_Group):
    model_config = _flat_names("password_")

    min_length: int = Field(default=8, ge=8)
    max_length: int = Field(default=1024, ge=64, le=1024)


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
