"""`Foundation`: the core pieces every capability is built on, handed over as one."""

from __future__ import annotations

from dataclasses import dataclass

from keystile.repositories.audit import AuditRepository
from keystile.repositories.cached_users import CachedUserRepository
from keystile.repositories.database import Database
from keystile.repositories.sessions import SessionRepository
from keystile.repositories.users import PostgresUserRepository
from keystile.secret_keys import SecretKeys
from keystile.services.account_security import AccountSecurity
from keystile.services.rate_limits import RateLimiter
from keystile.services.revocation import TokenEpochs, TokenRevoker
from keystile.services.sessions import SessionService
from keystile.settings import Settings
from keystile.stores.cache import CacheHub
from keystile.stores.rate_limits import CounterStore

__all__ = ["Foundation"]


@dataclass(frozen=True, slots=True)
class Foundation:
    """Settings, storage, caches and the account core, as the composition root made them.

    A capability's builder (`build_mail`, `build_machine_access`) takes this whole,
    so a new capability needs no new list of arguments, and each builder names only
    what it uses.
    """

    settings: Settings
    keys: SecretKeys  # the secret key, and the previous ones still accepted
    database: Database
    caches: CacheHub
    users: CachedUserRepository
    user_rows: PostgresUserRepository  # writes inside a capability's own transactions
    audit: AuditRepository
    counters: CounterStore
    limits: RateLimiter
    sessions: SessionService
    session_records: SessionRepository
    epochs: TokenEpochs
    revoker: TokenRevoker
    security: AccountSecurity
