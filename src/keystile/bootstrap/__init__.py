"""The composition root: settings -> pool and Redis -> repositories -> services.

One builder per capability, grouped by module: `backends` (the asyncpg pool, Redis,
the cache hub, the purge hook, the pool sampler), `accounts` (users, password hashing,
the credential cache, abuse protection, sessions), `tokens` (the key ring,
revocation, the token service), `factors` (second factors and passkeys) and
`housekeeping`; mail is `keystile.mail.bootstrap`, machine access
`keystile.services.machine_bootstrap`. Each builder puts what it creates on one
`AsyncExitStack` the moment it exists (a pool's close, a background loop's cancel),
so shutdown, or a failure half-way through startup, closes exactly what was opened,
in reverse order. Everything is built inside the running loop (asyncpg pools need
it); `open_services` is the context the app and the CLI use. To swap a component,
pass it in `Overrides`; nothing here is a module-level singleton.

A new capability adds a builder next to the others, a field to `Services`
(keystile/container.py) and one line to `build_services`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

from keystile.bootstrap.accounts import (
    CREDENTIALS_NAMESPACE,
    build_abuse_protection,
    build_credentials,
    build_hasher,
    build_hashing,
    build_sessions,
    build_users,
)
from keystile.bootstrap.backends import (
    _pool_sampler,
    build_caches,
    build_purger,
    open_database,
    open_redis,
)
from keystile.bootstrap.factors import build_mfa, build_passkeys
from keystile.bootstrap.housekeeping import build_housekeeping
from keystile.bootstrap.tokens import build_key_ring, build_revocation, build_tokens
from keystile.container import Overrides, ServiceProvider, Services
from keystile.mail.bootstrap import build_mail
from keystile.repositories import (
    PostgresAuditLog,
    PostgresRefreshTokenRepository,
    PostgresSessionRepository,
    PostgresUserRepository,
)
from keystile.repositories.audit import BufferedAuditLog
from keystile.secret_keys import read_secret_keys
from keystile.services import AuthService, PasswordPolicy, UserAdminService
from keystile.services.account_security import AccountSecurity
from keystile.services.audit import AuditService
from keystile.services.foundation import Foundation
from keystile.services.login_gate import LoginGate
from keystile.services.machine_bootstrap import build_machine_access
from keystile.services.password_policy import load_common_passwords
from keystile.services.rate_limits import CounterKeys
from keystile.services.reauth import ReauthService
from keystile.settings import Settings
from keystile.stores.login_gate import RedisLoginGate
from keystile.stores.redis_batch import RedisBatch

__all__ = [
    "CREDENTIALS_NAMESPACE",
    "Overrides",
    "ServiceProvider",
    "Services",
    "build_abuse_protection",
    "build_caches",
    "build_credentials",
    "build_hasher",
    "build_hashing",
    "build_housekeeping",
    "build_key_ring",
    "build_mfa",
    "build_passkeys",
    "build_purger",
    "build_revocation",
    "build_services",
    "build_sessions",
    "build_tokens",
    "build_users",
    "open_database",
    "open_redis",
    "open_services",
]


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
    keys = read_secret_keys(settings)
    # Caches and counter names use the current key alone: after a rotation they just miss.
    secret = keys.current
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
    users = build_users(settings, user_rows, caches, secret, counter_keys, previous=keys.previous)
    hasher = overrides.hasher or build_hashing(settings, stack)
    credentials = build_credentials(
        settings, redis, hasher, secret, counter_keys, store=overrides.credential_store, batch=batch
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
        # Long enough for a refused login to come back on its latest promised turn.
        attempts_lifetime=2 * hasher.admission.horizon,
    )
    failures = BufferedAuditLog(audit)
    stack.push_async_callback(failures.close)  # before the pool closes: written on shutdown
    session_repository = PostgresSessionRepository(database)
    sessions = build_sessions(settings.sessions, session_repository, caches)
    ring = await build_key_ring(settings, keys, database, caches, stack)
    refresh_tokens = PostgresRefreshTokenRepository(database)
    epochs, revoker = build_revocation(settings, caches, users, refresh_tokens, audit)
    security = AccountSecurity(users, hasher, policy, sessions, revoker, audit)
    base = Foundation(
        settings,
        keys,
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
        keys,
        database,
        redis,
        users,
        audit,
        counters,
        mail.notices,
        overrides.mfa_clock,
        failures,
        batch,
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
    tokens = build_tokens(settings, keys, ring, refresh_tokens, epochs, auth, audit, mfa)
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
