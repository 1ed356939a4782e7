"""Wiring of machine access: API keys, OAuth clients, roles and the admin API.

`build_machine_access` is called once by the composition root with the core pieces
it needs; everything it builds is plain objects (no tasks, nothing to close), and
its caches are registered on the worker's invalidation listener.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from keystile.rates import Rate
from keystile.repositories.api_keys import ApiKeyRecord, PostgresApiKeyRepository
from keystile.repositories.clients import ClientRecord, PostgresClientRepository
from keystile.repositories.user_admin import PostgresUserAdminRepository
from keystile.services.access_tokens import AccessTokenCodec
from keystile.services.administration import AdministrationService
from keystile.services.api_keys import ApiKeyService, is_api_key
from keystile.services.clients import ClientService
from keystile.services.foundation import Foundation
from keystile.services.keys import KeyRing
from keystile.services.opaque_secrets import Hmac
from keystile.services.rate_limits import CounterKeys
from keystile.services.roles import RoleService
from keystile.services.tokens import TokenService
from keystile.services.types import Principal
from keystile.stores.cache import TieredCache

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
    base: Foundation, *, tokens: TokenService, key_ring: KeyRing
) -> MachineAccess:
    """Build the machine-access services over the core ones."""
    settings = base.settings
    machine = settings.machine
    key_cache: TieredCache[ApiKeyRecord] = base.caches.tiered(
        "api-key",
        encode=ApiKeyRecord.to_json,
        decode=ApiKeyRecord.from_json,
        local_ttl=machine.api_key_cache_local_ttl_seconds,
        redis_ttl=machine.api_key_cache_redis_ttl_seconds,
        outage_copy=True,  # API-key requests go on through a PostgreSQL outage
    )
    client_cache: TieredCache[ClientRecord] = base.caches.tiered(
        "oauth-client",
        encode=ClientRecord.to_json,
        decode=ClientRecord.from_json,
        local_ttl=machine.api_key_cache_local_ttl_seconds,
        redis_ttl=machine.api_key_cache_redis_ttl_seconds,
    )
    api_keys = ApiKeyService(
        PostgresApiKeyRepository(base.database),
        key_cache,
        base.epochs,
        base.audit,
        digests=Hmac.under(base.keys, "api key secrets v1"),
        scopes=frozenset(settings.tokens.scopes),
        max_days=machine.api_key_max_days,
        per_user=machine.api_keys_per_user,
        touch_interval=timedelta(seconds=machine.api_key_touch_interval_seconds),
    )
    codec = AccessTokenCodec(
        key_ring,
        issuer=settings.tokens.issuer,
        audience=settings.tokens.audience,
        ttl=machine.client_token_ttl_seconds,
        leeway=settings.tokens.leeway_seconds,
    )
    clients = ClientService(
        PostgresClientRepository(base.database),
        client_cache,
        codec,
        base.epochs,
        api_keys,
        base.audit,
        base.counters,
        CounterKeys(base.keys.current),  # the same counter key naming as the core rate limiter
        digests=Hmac.under(base.keys, "oauth client secrets v1"),
        scopes=frozenset(settings.tokens.scopes),
        audience=settings.tokens.audience,
        ttl=machine.client_token_ttl_seconds,
        per_ip=Rate.parse(machine.rate_limit_client_credentials_per_ip),
        per_client=Rate.parse(machine.rate_limit_client_credentials_per_client),
    )
    admin_repository = PostgresUserAdminRepository(
        base.database, forget_cached=base.users.forget_cached
    )
    roles = RoleService(
        base.users, admin_repository, base.epochs, base.audit, extra_roles=machine.extra_roles
    )
    administration = AdministrationService(
        base.users,
        admin_repository,
        base.sessions,
        base.revoker,
        base.epochs,
        api_keys,
        roles,
        base.audit,
    )
    return MachineAccess(api_keys, clients, roles, administration, tokens)
