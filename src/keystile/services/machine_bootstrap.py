"""Wiring of machine access: API keys, OAuth clients, roles and the admin API.

`build_machine_access` is called once by the composition root with the core pieces
it needs; everything it builds is plain objects (no tasks, nothing to close), and
its caches are registered on the worker's invalidation listener.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from redis.asyncio import Redis

from keystile.repositories.api_keys import ApiKeyRecord, PostgresApiKeyRepository
from keystile.repositories.audit import PostgresAuditLog
from keystile.repositories.clients import ClientRecord, PostgresClientRepository
from keystile.repositories.database import Database
from keystile.repositories.user_admin import PostgresUserAdminRepository
from keystile.repositories.users import PostgresUserRepository, User
from keystile.services.access_tokens import AccessTokenCodec
from keystile.services.administration import AdministrationService
from keystile.services.api_keys import ApiKeyService, is_api_key
from keystile.services.clients import ClientService
from keystile.services.keys import KeyRing
from keystile.services.opaque_secrets import Hmac
from keystile.services.rate_limits import CounterKeys
from keystile.services.revocation import TokenEpochs, TokenRevoker
from keystile.services.roles import RoleService
from keystile.services.sessions import SessionService
from keystile.services.tokens import TokenService
from keystile.services.types import Principal
from keystile.settings import Settings
from keystile.stores.cache import InvalidationListener, TieredCache
from keystile.stores.rate_limits import CounterStore, Rate
from keystile.stores.sealing import derive_key

__all__ = ["MachineAccess", "build_machine_access"]


@dataclass(frozen=True, slots=True)
class MachineAccess:
    """The services of machine access, and the bearer check that spans them."""

    api_keys: ApiKeyService
    clients: ClientService
    roles: RoleService
    administration: AdministrationService
    tokens: TokenService

    async def authenticate_bearer(self, token: str) -> Principal:
        """Return the principal of a bearer credential: an API key or an access token.

        A client-credentials token is refused once its client is deleted.
        """
        if is_api_key(token):
            return await self.api_keys.authenticate(token)
        principal = await self.tokens.authenticate(token)
        if principal.client_id is not None:
            return await self.clients.ensure_live(principal)
        return principal


def build_machine_access(
    settings: Settings,
    *,
    secret: bytes,
    database: Database,
    redis: Redis,
    invalidation: InvalidationListener,
    users: PostgresUserRepository,
    users_by_email: TieredCache[User],
    audit: PostgresAuditLog,
    sessions: SessionService,
    revoker: TokenRevoker,
    epochs: TokenEpochs,
    tokens: TokenService,
    key_ring: KeyRing,
    counters: CounterStore,
) -> MachineAccess:
    """Build the machine-access services over the core ones."""
    key_cache: TieredCache[ApiKeyRecord] = TieredCache(
        "api-key",
        redis,
        encode=ApiKeyRecord.to_json,
        decode=ApiKeyRecord.from_json,
        local_ttl=settings.api_key_cache_local_ttl_seconds,
        redis_ttl=settings.api_key_cache_redis_ttl_seconds,
    )
    invalidation.register(key_cache)
    client_cache: TieredCache[ClientRecord] = TieredCache(
        "oauth-client",
        redis,
        encode=ClientRecord.to_json,
        decode=ClientRecord.from_json,
        local_ttl=settings.api_key_cache_local_ttl_seconds,
        redis_ttl=settings.api_key_cache_redis_ttl_seconds,
    )
    invalidation.register(client_cache)
    api_keys = ApiKeyService(
        PostgresApiKeyRepository(database),
        key_cache,
        epochs,
        audit,
        digests=Hmac(derive_key(secret, "api key secrets v1")),
        scopes=settings.token_scopes,
        max_days=settings.api_key_max_days,
        per_user=settings.api_keys_per_user,
        touch_interval=timedelta(seconds=settings.api_key_touch_interval_seconds),
    )
    codec = AccessTokenCodec(
        key_ring,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        ttl=settings.client_token_ttl_seconds,
        leeway=settings.token_leeway_seconds,
    )
    clients = ClientService(
        PostgresClientRepository(database),
        client_cache,
        codec,
        epochs,
        api_keys,
        audit,
        counters,
        CounterKeys(secret),  # the same counter key naming as the core rate limiter
        digests=Hmac(derive_key(secret, "oauth client secrets v1")),
        scopes=settings.token_scopes,
        audience=settings.token_audience,
        ttl=settings.client_token_ttl_seconds,
        per_ip=Rate.parse(settings.rate_limit_client_credentials_per_ip),
        per_client=Rate.parse(settings.rate_limit_client_credentials_per_client),
    )
    admin_repository = PostgresUserAdminRepository(database, by_email=users_by_email)
    roles = RoleService(users, admin_repository, epochs, audit, extra_roles=settings.extra_roles)
    administration = AdministrationService(
        users, admin_repository, sessions, revoker, epochs, api_keys, roles, audit
    )
    return MachineAccess(api_keys, clients, roles, administration, tokens)
