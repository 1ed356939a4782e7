"""The composition root: settings -> pool and Redis -> repositories -> services.

Everything is built inside the running loop (asyncpg pools need it), kept on
`app.extensions["keystile"]`, and closed on shutdown. To swap a component, pass
it in `Overrides`; nothing here is a module-level singleton.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from aiocache.base import BaseCache
from redis.asyncio import Redis

from keystile.mail.bootstrap import MAIL_RATE_LIMITED_ACTIONS, MailServices, build_mail
from keystile.metrics import PoolSampler
from keystile.repositories import (
    Database,
    PostgresAuditLog,
    PostgresRefreshTokenRepository,
    PostgresSessionRepository,
    PostgresSigningKeyRepository,
    PostgresUserRepository,
    User,
    create_pool,
)
from keystile.repositories.sessions import SessionRecord
from keystile.repositories.users import user_from_json, user_to_json
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
from keystile.services.audit import AuditService
from keystile.services.housekeeping import Housekeeping
from keystile.services.keys import KeyRing, SecretBox
from keystile.services.login_throttle import LoginThrottle
from keystile.services.password_policy import load_common_passwords
from keystile.services.rate_limits import ActionLimits, CounterKeys, KnownClients, RateLimiter
from keystile.services.revocation import EPOCH_NAMESPACE, TokenEpochs, TokenHolder, TokenRevoker
from keystile.services.tokens import TokenService
from keystile.settings import Settings, SettingsError
from keystile.stores import create_redis
from keystile.stores.cache import InvalidationListener, TieredCache, publish
from keystile.stores.credential_store import close_store, create_credential_store
from keystile.stores.purge import NoPurge, SurrogatePurger, VarnishPurger
from keystile.stores.rate_limits import (
    Backoff,
    CounterStore,
    FallbackCounterStore,
    MemoryCounterStore,
    RedisCounterStore,
)
from keystile.stores.sealing import Sealer, derive_key

__all__ = ["Overrides", "ServiceProvider", "Services", "build_services"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Overrides:
    """Components to use instead of the ones the composition root would build."""

    hasher: PasswordHasher | None = None
    purger: SurrogatePurger | None = None
    # Any aiocache cache (e.g. SimpleMemoryCache) instead of the Redis one.
    credential_store: BaseCache | None = None


class ServiceProvider(Protocol):
    """Builds an extension's services from the core ones (see `keystile.extensions`)."""

    def build(self, core: Services) -> AbstractAsyncContextManager[object]:
        """Return a context that yields the extension's services and closes them on exit."""
        ...


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a handler may reach, built once per worker process."""

    settings: Settings
    database: Database
    redis: Redis
    invalidation: InvalidationListener
    users: PostgresUserRepository
    audit: PostgresAuditLog
    hasher: PasswordHasher
    credentials: CredentialCache
    users_by_email: TieredCache[User]
    policy: PasswordPolicy
    sessions: SessionService
    auth: AuthService
    admin: UserAdminService
    purger: SurrogatePurger
    counters: CounterStore
    limits: RateLimiter
    throttle: LoginThrottle
    audit_admin: AuditService
    key_ring: KeyRing
    tokens: TokenService
    mail: MailServices
    extensions: tuple[object, ...] = ()

    def extension(self, kind: type[T]) -> T:
        """Return the services an extension built, by their type."""
        for built in self.extensions:
            if isinstance(built, kind):
                return built
        raise LookupError(f"no extension built a {kind.__qualname__}; is it registered?")


def build_hasher(settings: Settings) -> PasswordHasher:
    """Return the password hasher the settings describe."""
    return PasswordHasher(
        Argon2Parameters(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        ),
        threads=settings.hash_thread_count,
        queue_limit=settings.hash_queue_bound,
        retry_after=settings.hash_retry_after_seconds,
        niceness=settings.hash_thread_niceness,
    )


def build_users_by_email(settings: Settings, redis: Redis, secret: bytes) -> TieredCache[User]:
    """Return the login lookup cache; its Redis copies are sealed (they hold password hashes)."""
    sealer = Sealer(derive_key(secret, "user cache"), encode=user_to_json, decode=user_from_json)
    return TieredCache(
        "user-by-email",
        redis,
        encode=sealer.seal,
        decode=sealer.unseal,
        local_ttl=settings.user_cache_local_ttl_seconds,
        redis_ttl=settings.user_cache_redis_ttl_seconds,
    )


# Every action the rate limiter knows; each has `rate_limit_<action>_per_{ip,account}`.
RATE_LIMITED_ACTIONS = (
    "login",
    "token",
    "refresh",
    "register",
    "password_change",
    *MAIL_RATE_LIMITED_ACTIONS,
)


def build_rate_limiting(
    settings: Settings, redis: Redis, audit: PostgresAuditLog
) -> tuple[CounterStore, RateLimiter, LoginThrottle]:
    """Return the counter store, the rate limiter and the login throttle over one store."""
    counters = FallbackCounterStore(
        RedisCounterStore(redis),
        MemoryCounterStore(),
        retry_interval=settings.rate_limit_redis_retry_seconds,
    )
    # Serving always has a secret key (create_app insists); a CLI command without one
    # never shares counters, so a throwaway key is as good as any.
    keys = CounterKeys(settings.read_secret_key() or secrets.token_bytes(32))
    known = KnownClients(counters, keys, ttl=settings.known_client_days * 86_400.0)
    limits = {
        action: ActionLimits(
            per_ip=settings.rate_limit(action, "ip"),
            per_account=settings.rate_limit(action, "account"),
        )
        for action in RATE_LIMITED_ACTIONS
    }
    window = float(settings.login_failure_window_seconds)
    throttle = LoginThrottle(
        counters,
        keys,
        known,
        audit,
        per_client=Backoff(
            free_failures=settings.login_backoff_client_free_failures,
            base_delay=settings.login_backoff_base_seconds,
            max_delay=settings.login_backoff_max_seconds,
            window=window,
        ),
        per_account=Backoff(
            free_failures=settings.login_backoff_account_free_failures,
            base_delay=settings.login_backoff_base_seconds,
            max_delay=settings.login_backoff_max_seconds,
            window=window,
        ),
    )
    return counters, RateLimiter(counters, keys, known, audit, limits), throttle


def build_housekeeping(
    settings: Settings,
    audit: AuditService,
    sessions: PostgresSessionRepository,
    refresh_tokens: PostgresRefreshTokenRepository,
) -> Housekeeping:
    """Return the periodic deletion of old audit events and long-expired sessions/tokens."""
    keep_expired = timedelta(hours=settings.expired_record_retention_hours)

    def expired_before() -> datetime:
        return datetime.now(UTC) - keep_expired

    return Housekeeping(
        [
            ("audit_events", audit.prune),
            ("sessions", lambda: sessions.delete_expired(expired_before())),
            ("refresh_token_families", lambda: refresh_tokens.delete_expired(expired_before())),
        ]
    )


def _required_url(settings: Settings, key: str) -> str:
    value = getattr(settings, key)
    if value is None:
        raise SettingsError(f"{key} (KEYSTILE_{key.upper()}): required to serve")
    return str(value.get_secret_value())


def _build_purger(settings: Settings) -> SurrogatePurger:
    if not settings.purge_urls:
        return NoPurge()
    return VarnishPurger(settings.purge_urls, timeout=settings.purge_timeout_seconds)


KEYS_NAMESPACE = "signing_keys"


def _build_tokens(
    settings: Settings,
    secret: bytes,
    database: Database,
    redis: Redis,
    invalidation: InvalidationListener,
    users: PostgresUserRepository,
    audit: PostgresAuditLog,
) -> tuple[KeyRing, TokenEpochs, TokenRevoker, PostgresRefreshTokenRepository]:
    """Wire the key ring and the token epoch cache, both kept fresh through pub/sub."""

    async def notify_rotation() -> bool:
        return await publish(redis, KEYS_NAMESPACE, "rotated")

    ring = KeyRing(
        PostgresSigningKeyRepository(database),
        SecretBox(secret),
        algorithm=settings.token_algorithm,
        notify=notify_rotation,
    )
    invalidation.subscribe(KEYS_NAMESPACE, ring.poke)
    epoch_cache: TieredCache[TokenHolder] = TieredCache(
        EPOCH_NAMESPACE,
        redis,
        encode=TokenHolder.encode,
        decode=TokenHolder.decode,
        local_ttl=settings.token_epoch_cache_seconds,
        redis_ttl=settings.token_epoch_redis_seconds,
    )
    invalidation.register(epoch_cache)
    epochs = TokenEpochs(epoch_cache, users)
    refresh_tokens = PostgresRefreshTokenRepository(database)
    return ring, epochs, TokenRevoker(refresh_tokens, epochs, audit), refresh_tokens


@asynccontextmanager
async def build_services(
    settings: Settings,
    overrides: Overrides | None = None,
    providers: Sequence[ServiceProvider] = (),
) -> AsyncIterator[Services]:
    """Open the pool and Redis, wire every service, and close them all on exit.

    Each of `providers` (the extensions) then builds its services from the core ones;
    they are closed, in reverse order, before the core.
    """
    overrides = overrides or Overrides()
    secret = settings.read_secret_key()
    if secret is None:
        raise SettingsError("secret_key (KEYSTILE_SECRET_KEY or secret_key_file): required")
    pool = await create_pool(
        _required_url(settings, "database_url"),
        size=settings.db_pool_size,
        connect_timeout=settings.db_connect_timeout,
        statement_timeout=settings.db_statement_timeout,
        statement_cache_size=settings.db_statement_cache_size,
    )
    redis = create_redis(
        _required_url(settings, "redis_url"),
        socket_timeout=settings.redis_socket_timeout,
        connect_timeout=settings.redis_connect_timeout,
        max_connections=settings.redis_pool_size,
    )
    hasher = overrides.hasher or build_hasher(settings)
    credential_store = overrides.credential_store or create_credential_store(
        _required_url(settings, "redis_url"),
        namespace="keystile:credentials",
        socket_timeout=settings.redis_socket_timeout,
        connect_timeout=settings.redis_connect_timeout,
        max_connections=settings.redis_pool_size,
    )
    invalidation = InvalidationListener(redis)
    purger = overrides.purger or _build_purger(settings)
    pruning: asyncio.Task[None] | None = None
    ring: KeyRing | None = None
    mail: MailServices | None = None
    sampler = PoolSampler(pool, redis)
    try:
        database = Database(
            pool,
            acquire_timeout=settings.db_acquire_timeout,
            statement_timeout=settings.db_statement_timeout,
        )
        users_by_email = build_users_by_email(settings, redis, secret)
        invalidation.register(users_by_email)
        users = PostgresUserRepository(database, by_email=users_by_email)
        credentials = CredentialCache(
            hasher,
            credential_store,
            key=derive_key(secret, "credential cache"),
            ttl=settings.credential_cache_ttl_seconds,
        )
        audit = PostgresAuditLog(database)
        policy = PasswordPolicy(
            min_length=settings.password_min_length,
            max_length=settings.password_max_length,
            common_passwords=load_common_passwords(),
        )
        counters, limits, throttle = build_rate_limiting(settings, redis, audit)
        audit_admin = AuditService(
            audit, users, retention=timedelta(days=settings.audit_retention_days)
        )
        session_cache: TieredCache[SessionRecord] = TieredCache(
            "session",
            redis,
            encode=SessionRecord.to_json,
            decode=SessionRecord.from_json,
            local_ttl=settings.session_cache_local_ttl_seconds,
            redis_ttl=settings.session_cache_redis_ttl_seconds,
        )
        invalidation.register(session_cache)
        session_repository = PostgresSessionRepository(database)
        sessions = SessionService(
            session_repository,
            session_cache,
            idle_timeout=timedelta(seconds=settings.session_idle_timeout_seconds),
            absolute_lifetime=timedelta(seconds=settings.session_absolute_lifetime_seconds),
            touch_interval=timedelta(seconds=settings.session_touch_interval_seconds),
        )
        ring, epochs, revoker, refresh_tokens = _build_tokens(
            settings, secret, database, redis, invalidation, users, audit
        )
        mail = build_mail(
            settings,
            secret=secret,
            database=database,
            users=users,
            sessions=sessions,
            session_records=session_repository,
            revoker=revoker,
            epochs=epochs,
            hasher=hasher,
            password_policy=policy,
            limits=limits,
            counters=counters,
            audit=audit,
        )
        auth = AuthService(
            users,
            sessions,
            hasher,
            policy,
            audit,
            credentials,
            throttle,
            revoker=revoker,
            hooks=mail.flows,
        )
        tokens = TokenService(
            codec=AccessTokenCodec(
                ring,
                issuer=settings.token_issuer,
                audience=settings.token_audience,
                ttl=settings.access_token_ttl_seconds,
                leeway=settings.token_leeway_seconds,
            ),
            ring=ring,
            refresh_tokens=refresh_tokens,
            epochs=epochs,
            authenticator=auth,
            audit=audit,
            secret=secret,
            scopes=settings.token_scopes,
            refresh_idle=timedelta(seconds=settings.refresh_token_idle_seconds),
            refresh_absolute=timedelta(seconds=settings.refresh_token_absolute_seconds),
            reuse_grace=timedelta(seconds=settings.refresh_reuse_grace_seconds),
            verified_cache_size=settings.verified_token_cache_size,
        )
        await ring.load()
        ring.start(settings.signing_key_refresh_seconds)
        invalidation.start()
        if settings.housekeeping_interval_seconds:
            housekeeping = build_housekeeping(
                settings, audit_admin, session_repository, refresh_tokens
            )
            pruning = asyncio.get_running_loop().create_task(
                housekeeping.run_every(settings.housekeeping_interval_seconds),
                name="housekeeping",
            )
        sampler.start()
        mail.start()
        core = Services(
            settings=settings,
            database=database,
            redis=redis,
            invalidation=invalidation,
            users=users,
            audit=audit,
            hasher=hasher,
            credentials=credentials,
            users_by_email=users_by_email,
            policy=policy,
            sessions=sessions,
            auth=auth,
            admin=UserAdminService(users, hasher, policy, sessions, audit, revoker=revoker),
            purger=purger,
            counters=counters,
            limits=limits,
            throttle=throttle,
            audit_admin=audit_admin,
            key_ring=ring,
            tokens=tokens,
            mail=mail,
        )
        async with AsyncExitStack() as stack:
            built = [await stack.enter_async_context(p.build(core)) for p in providers]
            yield dataclasses.replace(core, extensions=tuple(built))
    finally:
        if mail is not None:
            await mail.aclose()
        if ring is not None:
            await ring.stop()
        if pruning is not None:
            pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruning
        await sampler.stop()
        await invalidation.stop()
        if isinstance(purger, VarnishPurger) and overrides.purger is None:
            await purger.aclose()
        if overrides.hasher is None:
            hasher.close()
        if overrides.credential_store is None:
            await close_store(credential_store)
        await redis.aclose()
        await asyncio.wait_for(pool.close(), timeout=settings.db_statement_timeout)
