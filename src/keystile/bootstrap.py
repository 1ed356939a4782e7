"""The composition root: settings -> pool and Redis -> repositories -> services.

One builder per capability (database, Redis, caches, hashing, abuse protection,
sessions, tokens, housekeeping ...). Each puts what it creates on one
`AsyncExitStack` the moment it exists (a pool's close, a background loop's cancel),
so shutdown, or a failure half-way through startup, closes exactly what was opened,
in reverse order. Everything is built inside the running loop (asyncpg pools need
it); `open_services` is the context the app and the CLI use. To swap a component,
pass it in `Overrides`; nothing here is a module-level singleton.

A new capability adds a builder here, a field to `Services` (keystile/container.py)
and one line to `build_services`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr
from redis.asyncio import Redis

from keystile.container import Overrides, ServiceProvider, Services
from keystile.mail.bootstrap import build_mail
from keystile.metrics import PoolSampler
from keystile.repositories import (
    Database,
    PostgresAuditLog,
    PostgresRefreshTokenRepository,
    PostgresSessionRepository,
    PostgresSigningKeyRepository,
    PostgresUserRepository,
    create_pool,
)
from keystile.repositories.audit import AuditLog, BufferedAuditLog
from keystile.repositories.cached_users import CachedUserRepository
from keystile.repositories.mfa import PostgresMfaRepository
from keystile.repositories.refresh_tokens import RefreshTokenRepository
from keystile.repositories.sessions import SessionRecord, SessionRepository
from keystile.repositories.users import UserRepository, user_from_json, user_to_json
from keystile.services import (
    Argon2Parameters,
    AuthService,
    CredentialCache,
    PasswordHasher,
    PasswordPolicy,
    SessionService,
    UserAdminService,
)
from keystile.services.access_tokens import AccessTokenCodec
from keystile.services.account_security import AccountSecurity
from keystile.services.audit import AuditService
from keystile.services.foundation import Foundation
from keystile.services.housekeeping import Housekeeping, HousekeepingJob
from keystile.services.keys import KeyRing, SecretBox
from keystile.services.login_gate import LoginGate
from keystile.services.login_throttle import LoginThrottle
from keystile.services.machine_bootstrap import build_machine_access
from keystile.services.mfa import FactorNotices, MfaService
from keystile.services.mfa_codes import FactorCodes
from keystile.services.mfa_factors import FactorService
from keystile.services.passkey_challenges import PasskeyChallenges, relying_party
from keystile.services.passkey_factors import PasskeyFactorService
from keystile.services.passkeys import PasskeyService
from keystile.services.password_policy import load_common_passwords
from keystile.services.rate_limits import (
    CounterKeys,
    KnownClients,
    RateLimiter,
    normalise_account,
)
from keystile.services.reauth import ReauthService
from keystile.services.revocation import EPOCH_NAMESPACE, TokenEpochs, TokenHolder, TokenRevoker
from keystile.services.tokens import TokenService
from keystile.settings import (
    DatabaseSettings,
    HttpCacheSettings,
    LimitSettings,
    RedisSettings,
    SessionSettings,
    Settings,
    SettingsError,
)
from keystile.stores import create_redis
from keystile.stores.cache import CacheHub
from keystile.stores.challenges import ChallengeStore
from keystile.stores.credential_store import create_credential_store
from keystile.stores.login_gate import RedisLoginGate
from keystile.stores.purge import NoPurge, SurrogatePurger, VarnishPurger
from keystile.stores.rate_limits import (
    Backoff,
    CounterStore,
    FallbackCounterStore,
    MemoryCounterStore,
    RedisCounterStore,
)
from keystile.stores.redis import close_redis
from keystile.stores.redis_batch import RedisBatch
from keystile.stores.sealing import Sealer, derive_key
from keystile.tasks import background, run_every

__all__ = [
    "build_hasher",
    "build_services",
    "open_database",
    "open_redis",
    "open_services",
]

KEYS_NAMESPACE = "signing_keys"
CREDENTIALS_NAMESPACE = "keystile:credentials"


@asynccontextmanager
async def open_services(
    settings: Settings,
    overrides: Overrides | None = None,
    providers: Sequence[ServiceProvider] = (),
) -> AsyncIterator[Services]:
    """Build every service for the life of the context; close them all on exit."""
    async with AsyncExitStack() as stack:
        yield await build_services(settings, stack, overrides, providers)


async def build_services(
    settings: Settings,
    stack: AsyncExitStack,
    overrides: Overrides | None = None,
    providers: Sequence[ServiceProvider] = (),
) -> Services:
    """Wire every service, putting each thing that needs closing on `stack` as it is made.

    Each of `providers` (the extensions) then builds its services from the core ones;
    being last on the stack, they are closed first.
    """
    overrides = overrides or Overrides()
    secret = settings.read_secret_key()
    if secret is None:
        raise SettingsError("secret_key (KEYSTILE_SECRET_KEY or secret_key_file): required")
    database = await stack.enter_async_context(open_database(settings.database))
    redis = await stack.enter_async_context(open_redis(settings.redis))
    # A login's deferrable Redis writes go out together, in one round trip (AuthService).
    batch = RedisBatch(redis, retry_interval=settings.limits.redis_retry_seconds)
    caches = await build_caches(
        redis, stack, outage_grace=settings.database.outage_grace_seconds, batch=batch
    )
    audit = PostgresAuditLog(database)
    user_rows = PostgresUserRepository(database)
    counter_keys = CounterKeys(secret)
    users = build_users(settings, user_rows, caches, secret, counter_keys)
    hasher = overrides.hasher or build_hashing(settings, stack)
    credentials = CredentialCache(
        hasher,
        overrides.credential_store
        or create_credential_store(redis, namespace=CREDENTIALS_NAMESPACE),
        key=derive_key(secret, "credential cache"),
        ttl=settings.cache.credential_ttl_seconds,
        # The login gate reads entries straight from Redis, unless a test swapped the store.
        namespace=None if overrides.credential_store else CREDENTIALS_NAMESPACE,
        account_tag=counter_keys.tag,  # one cluster slot with the account's counters
        batch=batch,
    )
    policy = PasswordPolicy(
        min_length=settings.passwords.min_length,
        max_length=settings.passwords.max_length,
        common_passwords=load_common_passwords(),
    )
    counters, limits, throttle, known = build_abuse_protection(
        settings, redis, audit, counter_keys, batch=batch
    )
    gate = LoginGate(
        RedisLoginGate(redis),
        limits,
        throttle,
        known,
        credentials,
        retry_interval=settings.limits.redis_retry_seconds,
        user_key=users.shared_key,
    )
    failures = BufferedAuditLog(audit)
    stack.push_async_callback(failures.close)  # before the pool closes: written on shutdown
    session_repository = PostgresSessionRepository(database)
    sessions = build_sessions(settings.sessions, session_repository, caches)
    ring = await build_key_ring(settings, secret, database, caches, stack)
    refresh_tokens = PostgresRefreshTokenRepository(database)
    epochs, revoker = build_revocation(settings, caches, users, refresh_tokens, audit)
    security = AccountSecurity(users, hasher, policy, sessions, revoker, audit)
    base = Foundation(
        settings,
        secret,
        database,
        caches,
        users,
        user_rows,
        audit,
        counters,
        limits,
        sessions,
        session_repository,
        epochs,
        revoker,
        security,
    )
    mail = await build_mail(base, stack)
    mfa, factors = build_mfa(
        settings,
        secret,
        database,
        redis,
        users,
        audit,
        counters,
        mail.notices,
        overrides.mfa_clock,
        failures,
    )
    auth = AuthService(
        users,
        sessions,
        hasher,
        policy,
        audit,
        credentials,
        throttle,
        gate=gate,
        failures=failures,
        security=security,
        hooks=mail.notices,
        second_factor=mfa,
        writes=batch,
    )
    audit_admin = AuditService(
        audit, users, retention=timedelta(days=settings.retention.audit_days), pending=failures
    )
    await build_housekeeping(
        settings, audit_admin, session_repository, refresh_tokens, stack, extra=mail.housekeeping
    )
    await stack.enter_async_context(_pool_sampler(database, redis))
    tokens = build_tokens(settings, secret, ring, refresh_tokens, epochs, auth, audit, mfa)
    machine = build_machine_access(base, tokens=tokens, key_ring=ring)
    passkeys, passkey_factors = build_passkeys(settings, mfa, factors, users, audit, mail.notices)
    core = Services(
        settings=settings,
        database=database,
        redis=redis,
        caches=caches,
        users=users,
        audit=audit,
        hasher=hasher,
        credentials=credentials,
        policy=policy,
        sessions=sessions,
        auth=auth,
        admin=UserAdminService(users, hasher, policy, sessions, audit, revoker=revoker),
        purger=overrides.purger or await build_purger(settings.http_cache, stack),
        counters=counters,
        limits=limits,
        throttle=throttle,
        audit_admin=audit_admin,
        key_ring=ring,
        tokens=tokens,
        machine=machine,
        mail=mail,
        mfa=mfa,
        factors=factors,
        passkeys=passkeys,
        passkey_factors=passkey_factors,
        reauth=ReauthService(auth, mfa, passkeys, sessions, tokens, audit),
    )
    built = [await stack.enter_async_context(p.build(core)) for p in providers]
    return dataclasses.replace(core, extensions=tuple(built))


def _required(url: SecretStr | None, key: str) -> str:
    if url is None:
        raise SettingsError(f"{key} (KEYSTILE_{key.upper()}): required to serve")
    return url.get_secret_value()


@asynccontextmanager
async def open_database(settings: DatabaseSettings) -> AsyncIterator[Database]:
    """Open the asyncpg pool (and the read replica's, if set) for the life of the context."""
    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(
            _database_pool(settings, _required(settings.url, "database_url"))
        )
        if settings.read_url is not None:
            replica = await stack.enter_async_context(
                _database_pool(settings, settings.read_url.get_secret_value())
            )
            database.use_replica(replica)
        yield database


@asynccontextmanager
async def _database_pool(settings: DatabaseSettings, dsn: str) -> AsyncIterator[Database]:
    pool = await create_pool(
        dsn,
        size=settings.pool_size,
        connect_timeout=settings.connect_timeout,
        statement_timeout=settings.statement_timeout,
        statement_cache_size=settings.statement_cache_size,
        pgbouncer=settings.pgbouncer,
    )
    try:
        yield Database(
            pool,
            acquire_timeout=settings.acquire_timeout,
            statement_timeout=settings.statement_timeout,
        )
    finally:
        await asyncio.wait_for(pool.close(), timeout=settings.statement_timeout)


@asynccontextmanager
async def open_redis(settings: RedisSettings) -> AsyncIterator[Redis]:
    """Return the worker's one Redis client (one connection pool) for the life of the context."""
    redis = create_redis(
        _required(settings.url, "redis_url"),
        socket_timeout=settings.socket_timeout,
        connect_timeout=settings.connect_timeout,
        max_connections=settings.pool_size,
        cluster=settings.cluster,
    )
    try:
        yield redis
    finally:
        await close_redis(redis)


async def build_caches(
    redis: Redis,
    stack: AsyncExitStack,
    *,
    outage_grace: float = 0.0,
    batch: RedisBatch | None = None,
) -> CacheHub:
    """Return the hub every cross-worker cache registers with, its listener running."""
    caches = CacheHub(redis, outage_grace=outage_grace, batch=batch)
    await stack.enter_async_context(background("invalidation", caches.listen))
    return caches


def build_users(
    settings: Settings,
    rows: UserRepository,
    caches: CacheHub,
    secret: bytes,
    keys: CounterKeys | None = None,
) -> CachedUserRepository:
    """Return the users, looked up by email through a cache sealed in Redis (password hashes).

    Entries are keyed by a keyed hash of the email under the account's hash tag (the
    counter keys'), so Redis holds no emails and the login gate's script can read them.
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

    return CachedUserRepository(rows, by_email, key_of)


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
    """Return the failure backoff of `limits`, after `free_failures` free failures."""
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


async def build_key_ring(
    settings: Settings, secret: bytes, database: Database, caches: CacheHub, stack: AsyncExitStack
) -> KeyRing:
    """Return the signing keys, loaded, reloaded periodically and on a rotation message."""

    async def notify_rotation() -> bool:
        return await caches.publish(KEYS_NAMESPACE, "rotated")

    ring = KeyRing(
        PostgresSigningKeyRepository(database),
        SecretBox(secret),
        algorithm=settings.tokens.algorithm,
        notify=notify_rotation,
    )
    caches.subscribe(KEYS_NAMESPACE, ring.poke)
    await ring.load()
    interval = settings.tokens.signing_key_refresh_seconds
    await stack.enter_async_context(background("keyring", lambda: ring.run(interval)))
    return ring


def build_revocation(
    settings: Settings,
    caches: CacheHub,
    users: UserRepository,
    refresh_tokens: RefreshTokenRepository,
    audit: AuditLog,
) -> tuple[TokenEpochs, TokenRevoker]:
    """Return the users' token epochs, cached on every worker, and revocation over them."""
    epoch_cache = caches.tiered(
        EPOCH_NAMESPACE,
        encode=TokenHolder.encode,
        decode=TokenHolder.decode,
        local_ttl=settings.tokens.epoch_cache_seconds,
        redis_ttl=settings.tokens.epoch_redis_seconds,
        outage_copy=True,  # bearer requests go on through a PostgreSQL outage
    )
    epochs = TokenEpochs(epoch_cache, users)
    return epochs, TokenRevoker(refresh_tokens, epochs, audit)


def build_tokens(
    settings: Settings,
    secret: bytes,
    ring: KeyRing,
    refresh_tokens: RefreshTokenRepository,
    epochs: TokenEpochs,
    auth: AuthService,
    audit: AuditLog,
    second_factor: MfaService | None = None,
) -> TokenService:
    """Return the token service: JWT access tokens and rotating refresh tokens."""
    tokens = settings.tokens
    return TokenService(
        codec=AccessTokenCodec(
            ring,
            issuer=tokens.issuer,
            audience=tokens.audience,
            ttl=tokens.access_ttl_seconds,
            leeway=tokens.leeway_seconds,
        ),
        ring=ring,
        refresh_tokens=refresh_tokens,
        epochs=epochs,
        authenticator=auth,
        audit=audit,
        secret=secret,
        scopes=tokens.scopes,
        refresh_idle=timedelta(seconds=tokens.refresh_idle_seconds),
        refresh_absolute=timedelta(seconds=tokens.refresh_absolute_seconds),
        reuse_grace=timedelta(seconds=tokens.refresh_reuse_grace_seconds),
        verified_cache_size=tokens.verified_cache_size,
        second_factor=second_factor,
    )


def build_passkeys(
    settings: Settings,
    mfa: MfaService,
    factors: FactorService,
    users: CachedUserRepository,
    audit: AuditLog,
    notices: FactorNotices,
) -> tuple[PasskeyService, PasskeyFactorService]:
    """Return passkeys (WebAuthn): login and step-up, and the passkeys a user sets up.

    Both issue and take challenges through one `PasskeyChallenges`; rp id and origin
    come from `public_url` (docs/mfa.md).
    """
    rp_id, origin = relying_party(settings.email.public_url, settings.mfa.rp_id)
    challenges = PasskeyChallenges(
        mfa.challenges,
        audit,
        rp_id=rp_id,
        origin=origin,
        ttl=settings.mfa.challenge_ttl_seconds,
    )
    passkeys = PasskeyService(
        mfa.repository,
        users,
        challenges,
        mfa,
        audit,
        require_verified_email=settings.email.verification == "required",
    )
    passkey_factors = PasskeyFactorService(
        mfa.repository,
        users,
        challenges,
        factors,
        audit,
        rp_name=settings.mfa.rp_name,
        per_user=settings.mfa.passkeys_per_user,
        reauth_max_age=settings.machine.reauth_max_age_seconds,
        notices=notices,
    )
    return passkeys, passkey_factors


def build_mfa(
    settings: Settings,
    secret: bytes,
    database: Database,
    redis: Redis,
    users: CachedUserRepository,
    audit: AuditLog,
    counters: CounterStore,
    notices: FactorNotices,
    clock: Callable[[], float] | None,
    later: BufferedAuditLog,
) -> tuple[MfaService, FactorService]:
    """Return second factors (docs/mfa.md): the login's second step, and factor management.

    Both check codes through one `FactorCodes`, so they share the per-account backoff.
    """
    repository = PostgresMfaRepository(database)
    codes = FactorCodes(
        repository,
        audit,
        counters,
        CounterKeys(secret),
        secret=secret,
        backoff=_backoff(settings.limits, settings.mfa.free_failures),
        clock=clock or time.time,
    )
    mfa = MfaService(
        repository,
        users,
        ChallengeStore(redis, database),
        audit,
        later,
        codes,
        challenge_ttl=settings.mfa.challenge_ttl_seconds,
        notices=notices,
    )
    factors = FactorService(
        repository,
        users,
        audit,
        codes,
        issuer=settings.mfa.issuer,
        reauth_max_age=settings.machine.reauth_max_age_seconds,
        notices=notices,
    )
    return mfa, factors


async def build_housekeeping(
    settings: Settings,
    audit: AuditService,
    sessions: PostgresSessionRepository,
    refresh_tokens: PostgresRefreshTokenRepository,
    stack: AsyncExitStack,
    extra: Sequence[HousekeepingJob] = (),
) -> Housekeeping:
    """Return the deletion of old audit events and long-expired sessions and token families
    (and the `extra` jobs of other capabilities, such as settled mail), run every
    `housekeeping_interval_seconds` (0: never) for the life of the stack.
    """
    keep_expired = timedelta(hours=settings.retention.expired_record_hours)

    def expired_before() -> datetime:
        return datetime.now(UTC) - keep_expired

    housekeeping = Housekeeping(
        (
            ("audit_events", audit.prune),
            ("sessions", lambda: sessions.delete_expired(expired_before())),
            ("refresh_token_families", lambda: refresh_tokens.delete_expired(expired_before())),
            *extra,
        )
    )
    interval = settings.retention.housekeeping_interval_seconds
    if interval:
        # Workers started together do not all run at once.
        first = random.uniform(0, min(interval, 60.0))
        await stack.enter_async_context(
            background(
                "housekeeping",
                lambda: run_every(
                    interval, housekeeping.run_once, name="housekeeping", first_delay=first
                ),
            )
        )
    return housekeeping


async def build_purger(settings: HttpCacheSettings, stack: AsyncExitStack) -> SurrogatePurger:
    """Return the purge hook for shared HTTP caches (none configured: a no-op)."""
    if not settings.purge_urls:
        return NoPurge()
    purger = VarnishPurger(settings.purge_urls, timeout=settings.purge_timeout_seconds)
    stack.push_async_callback(purger.aclose)
    return purger


@asynccontextmanager
async def _pool_sampler(database: Database, redis: Redis) -> AsyncIterator[None]:
    sampler = PoolSampler(database.pool, redis)
    sampler.sample()
    async with background("pool-sampler", lambda: run_every(1.0, sampler.sample, name="pool")):
        yield
