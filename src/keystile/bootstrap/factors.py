"""The composition root's second factors (docs/mfa.md): TOTP and recovery codes, the
login's second step, and passkeys (WebAuthn).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis

from keystile.bootstrap.accounts import _backoff
from keystile.repositories import Database
from keystile.repositories.audit import AuditLog, BufferedAuditLog
from keystile.repositories.cached_users import CachedUserRepository
from keystile.repositories.mfa import PostgresMfaRepository
from keystile.secret_keys import SecretKeys
from keystile.services.mfa import FactorNotices, MfaService
from keystile.services.mfa_codes import FactorCodes
from keystile.services.mfa_factors import FactorService
from keystile.services.passkey_challenges import PasskeyChallenges, relying_party
from keystile.services.passkey_factors import PasskeyFactorService
from keystile.services.passkeys import PasskeyService
from keystile.services.rate_limits import CounterKeys
from keystile.settings import Settings
from keystile.stores.challenges import ChallengeStore
from keystile.stores.rate_limits import CounterStore
from keystile.stores.redis_batch import RedisBatch

__all__ = ["build_mfa", "build_passkeys"]


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
    keys: SecretKeys,
    database: Database,
    redis: Redis,
    users: CachedUserRepository,
    audit: AuditLog,
    counters: CounterStore,
    notices: FactorNotices,
    clock: Callable[[], float] | None,
    later: BufferedAuditLog,
    batch: RedisBatch,
) -> tuple[MfaService, FactorService]:
    """Return second factors (docs/mfa.md): the login's second step, and factor management.

    Both check codes through one `FactorCodes`, so they share the per-account backoff.
    """
    repository = PostgresMfaRepository(database)
    codes = FactorCodes(
        repository,
        audit,
        counters,
        CounterKeys(keys.current),
        secret=keys,
        backoff=_backoff(settings.limits, settings.mfa.free_failures),
        clock=clock or time.time,
    )
    mfa = MfaService(
        repository,
        users,
        ChallengeStore(redis, database, batch=batch),
        audit,
        later,
        codes,
        challenge_ttl=settings.mfa.challenge_ttl_seconds,
        notices=notices,
        writes=batch,
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
