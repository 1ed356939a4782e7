"""The composition root's accounts: users, password hashing, the credential cache,
abuse protection (counters, rate limits, the login throttle) and cookie sessions.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import timedelta

from aiocache.base import BaseCache
from redis.asyncio import Redis

from keystile.repositories.audit import AuditLog
from keystile.repositories.cached_users import CachedUserRepository
from keystile.repositories.sessions import SessionRecord, SessionRepository
from keystile.repositories.users import UserRepository, user_from_json, user_to_json
from keystile.services import (
    Argon2Parameters,
    CredentialCache,
    PasswordHasher,
    SessionService,
)
from keystile.services.login_throttle import LoginThrottle
from keystile.services.rate_limits import (
    CounterKeys,
    KnownClients,
    RateLimiter,
    normalise_account,
)
from keystile.settings import LimitSettings, SessionSettings, Settings
from keystile.stores.cache import CacheHub
from keystile.stores.credential_store import create_credential_store
from keystile.stores.rate_limits import (
    Backoff,
    CounterStore,
    FallbackCounterStore,
    MemoryCounterStore,
    RedisCounterStore,
)
from keystile.stores.redis_batch import RedisBatch
from keystile.stores.sealing import Sealer, derive_key

__all__ = [
    "CREDENTIALS_NAMESPACE",
    "build_abuse_protection",
    "build_credentials",
    "build_hasher",
    "build_hashing",
    "build_sessions",
    "build_users",
]

CREDENTIALS_NAMESPACE = "keystile:credentials"


def build_users(
    settings: Settings,
    rows: UserRepository,
    caches: CacheHub,
    secret: bytes,
    keys: CounterKeys | None = None,
    *,
    previous: Sequence[bytes] = (),
) -> CachedUserRepository:
    """Return the users, looked up by email through a cache sealed in Redis (password hashes).

    Entries are keyed by a keyed hash of the email under the account's hash tag (the
    counter keys'), so Redis holds no emails and the login gate's script can read them.
    `previous`: the previous secret keys, whose names of an entry a write drops as well
    (workers not yet restarted after a rotation still use them).
    """
    sealer = Sealer(derive_key(secret, "user cache"), encode=user_to_json, decode=user_from_json)
    by_email = caches.tiered(
        "user-by-email",
        encode=sealer.seal,
        decode=sealer.unseal,
        local_ttl=settings.cache.user_local_ttl_seconds,
        redis_ttl=settings.cache.user_redis_ttl_seconds,
        outage_copy=True,  # GET /v1/me reads it: it goes on through a PostgreSQL outage
        tagged_keys=True,
    )
    names = keys or CounterKeys(secret)

    # Two keyed hashes per lookup: remembered, since every bearer request looks its user up.
    @functools.lru_cache(maxsize=65_536)
    def key_of(email: str) -> str:
        return names.name("user-by-email", normalise_account(email))

    previous_names = [CounterKeys(key) for key in previous]

    @functools.lru_cache(maxsize=65_536)
    def previous_keys_of(email: str) -> tuple[str, ...]:
        account = normalise_account(email)
        return tuple(old.name("user-by-email", account) for old in previous_names)

    return CachedUserRepository(rows, by_email, key_of, previous_keys_of)


def build_hasher(settings: Settings) -> PasswordHasher:
    """Return the password hasher the settings describe; the caller closes it."""
    return PasswordHasher(
        Argon2Parameters(
            memory_kib=settings.hashing.memory_kib,
            time_cost=settings.hashing.time_cost,
            parallelism=settings.hashing.parallelism,
        ),
        threads=settings.hash_thread_count,
        budget=settings.hashing.login_wait_budget_ms / 1000,
    )


def build_hashing(settings: Settings, stack: AsyncExitStack) -> PasswordHasher:
    """Return the password hasher, its threads stopped when the stack closes."""
    hasher = build_hasher(settings)
    stack.callback(hasher.close)
    return hasher


def build_credentials(
    settings: Settings,
    redis: Redis,
    hasher: PasswordHasher,
    secret: bytes,
    keys: CounterKeys,
    *,
    store: BaseCache | None = None,
    batch: RedisBatch | None = None,
) -> CredentialCache:
    """Return the credential cache: verified password hashes, sealed, in Redis.

    `store` (`Overrides.credential_store`) replaces the Redis store; the caller's, it
    is neither started nor closed here.
    """
    return CredentialCache(
        hasher,
        store or create_credential_store(redis, namespace=CREDENTIALS_NAMESPACE),
        key=derive_key(secret, "credential cache"),
        ttl=settings.cache.credential_ttl_seconds,
        # The login gate reads entries straight from Redis, unless a test swapped the store.
        namespace=None if store else CREDENTIALS_NAMESPACE,
        account_tag=keys.tag,  # one cluster slot with the account's counters
        batch=batch,
    )


def build_abuse_protection(
    settings: Settings,
    redis: Redis,
    audit: AuditLog,
    keys: CounterKeys | None = None,
    *,
    batch: RedisBatch | None = None,
) -> tuple[CounterStore, RateLimiter, LoginThrottle, KnownClients]:
    """Return the counter store, rate limiter, login throttle and known clients (one store)."""
    limits = settings.limits
    counters = FallbackCounterStore(
        RedisCounterStore(redis, batch=batch),
        MemoryCounterStore(),
        retry_interval=limits.redis_retry_seconds,
    )
    # Serving always has a secret key (create_app insists); a CLI command without one
    # never shares counters, so a throwaway key is as good as any.
    keys = keys or CounterKeys(settings.read_secret_key() or secrets.token_bytes(32))
    known = KnownClients(counters, keys, ttl=limits.known_client_days * 86_400.0)
    throttle = LoginThrottle(
        counters,
        keys,
        known,
        audit,
        per_client=_backoff(limits, limits.client_free_failures),
        per_account=_backoff(limits, limits.account_free_failures),
    )
    return counters, RateLimiter(counters, keys, known, audit, limits.rates), throttle, known


def _backoff(limits: LimitSettings, free_failures: int) -> Backoff:
    """Return the failure backoff of `limits`, after `free_failures` free failures.

    Also the second factors' (`factors.build_mfa`): one shape of backoff everywhere.
    """
    return Backoff(
        free_failures=free_failures,
        base_delay=limits.backoff_base_seconds,
        max_delay=limits.backoff_max_seconds,
        window=float(limits.failure_window_seconds),
    )


def build_sessions(
    settings: SessionSettings, repository: SessionRepository, caches: CacheHub
) -> SessionService:
    """Return cookie sessions, their state cached on every worker."""
    cache = caches.tiered(
        "session",
        encode=SessionRecord.to_json,
        decode=SessionRecord.from_json,
        local_ttl=settings.cache_local_ttl_seconds,
        redis_ttl=settings.cache_redis_ttl_seconds,
        outage_copy=True,  # cookie requests go on through a PostgreSQL outage
    )
    return SessionService(
        repository,
        cache,
        idle_timeout=timedelta(seconds=settings.idle_timeout_seconds),
        absolute_lifetime=timedelta(seconds=settings.absolute_lifetime_seconds),
        touch_interval=timedelta(seconds=settings.touch_interval_seconds),
    )
