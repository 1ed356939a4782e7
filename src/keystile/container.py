"""`Services`: what the composition root builds, typed by what callers may rely on.

Repositories appear as their Protocols (`UserRepository`, `AuditRepository`), so a
caller cannot come to depend on a PostgreSQL class; `Overrides` names the parts a
test or a deployment may replace; `ServiceProvider` is how an extension builds its
own services from these. Nothing here imports a web framework.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aiocache.base import BaseCache
from redis.asyncio import Redis

from keystile.mail.bootstrap import MailServices
from keystile.repositories.audit import AuditRepository
from keystile.repositories.database import Database
from keystile.repositories.users import UserRepository
from keystile.services.audit import AuditService
from keystile.services.auth import AuthService
from keystile.services.credentials import CredentialCache
from keystile.services.keys import KeyRing
from keystile.services.login_throttle import LoginThrottle
from keystile.services.machine_bootstrap import MachineAccess
from keystile.services.mfa import MfaService
from keystile.services.mfa_factors import FactorService
from keystile.services.passkey_factors import PasskeyFactorService
from keystile.services.passkeys import PasskeyService
from keystile.services.password_policy import PasswordPolicy
from keystile.services.passwords import PasswordHasher
from keystile.services.rate_limits import RateLimiter
from keystile.services.reauth import ReauthService
from keystile.services.sessions import SessionService
from keystile.services.tokens import TokenService
from keystile.services.users import UserAdminService
from keystile.settings import Settings
from keystile.stores.cache import CacheHub
from keystile.stores.purge import SurrogatePurger
from keystile.stores.rate_limits import CounterStore

__all__ = ["Overrides", "ServiceProvider", "Services"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Overrides:
    """Components to use instead of the ones the composition root would build.

    An override is the caller's: the composition root neither starts nor closes it.
    """

    hasher: PasswordHasher | None = None
    purger: SurrogatePurger | None = None
    # Any aiocache cache (e.g. SimpleMemoryCache) instead of the Redis one.
    credential_store: BaseCache | None = None
    # The clock TOTP codes are checked against (seconds since the epoch), for tests.
    mfa_clock: Callable[[], float] | None = None


class ServiceProvider(Protocol):
    """Builds an extension's services from the core ones (see `keystile.ext`)."""

    def build(self, core: Services) -> AbstractAsyncContextManager[object]:
        """Return a context that yields the extension's services and closes them on exit."""
        ...


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a handler may reach, built once per worker process."""

    settings: Settings
    database: Database
    redis: Redis
    caches: CacheHub
    users: UserRepository
    audit: AuditRepository
    hasher: PasswordHasher
    credentials: CredentialCache
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
    machine: MachineAccess  # API keys, OAuth clients, roles, the admin API
    mail: MailServices  # verification, reset, email change, notices, the outbox
    mfa: MfaService  # the login's second step, step-up with a TOTP or recovery code
    factors: FactorService  # second factors a user sets up: TOTP, recovery codes, status
    passkeys: PasskeyService  # WebAuthn: log in with a passkey, step-up with one
    passkey_factors: PasskeyFactorService  # the passkeys a user sets up: register, rename, delete
    reauth: ReauthService  # step-up: refresh the caller's login in place
    extensions: tuple[object, ...] = ()

    def extension(self, kind: type[T]) -> T:
        """Return the services an extension built, by their type."""
        for built in self.extensions:
            if isinstance(built, kind):
                return built
        raise LookupError(f"no extension built a {kind.__qualname__}; is it registered?")
