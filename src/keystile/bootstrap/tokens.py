"""The composition root's tokens: the signing key ring, revocation (the users' token
epochs) and the token service (JWT access tokens, rotating refresh tokens).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import timedelta

from keystile.repositories import Database, PostgresSigningKeyRepository
from keystile.repositories.audit import AuditLog
from keystile.repositories.refresh_tokens import RefreshTokenRepository
from keystile.repositories.users import UserRepository
from keystile.secret_keys import SecretKeys
from keystile.services import AuthService
from keystile.services.access_tokens import AccessTokenCodec
from keystile.services.keys import KeyRing, SecretBox
from keystile.services.mfa import MfaService
from keystile.services.revocation import EPOCH_NAMESPACE, TokenEpochs, TokenHolder, TokenRevoker
from keystile.services.tokens import TokenService
from keystile.settings import Settings
from keystile.stores.cache import CacheHub
from keystile.tasks import background

__all__ = ["build_key_ring", "build_revocation", "build_tokens"]

KEYS_NAMESPACE = "signing_keys"


async def build_key_ring(
    settings: Settings,
    keys: SecretKeys,
    database: Database,
    caches: CacheHub,
    stack: AsyncExitStack,
) -> KeyRing:
    """Return the signing keys, loaded, reloaded periodically and on a rotation message.

    Keys sealed under a previous secret key still sign and verify; new ones are sealed
    under the current key.
    """

    async def notify_rotation() -> bool:
        return await caches.publish(KEYS_NAMESPACE, "rotated")

    ring = KeyRing(
        PostgresSigningKeyRepository(database),
        SecretBox(keys),
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
    keys: SecretKeys,
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
        keys=keys,
        scopes=tokens.scopes,
        refresh_idle=timedelta(seconds=tokens.refresh_idle_seconds),
        refresh_absolute=timedelta(seconds=tokens.refresh_absolute_seconds),
        reuse_grace=timedelta(seconds=tokens.refresh_reuse_grace_seconds),
        verified_cache_size=tokens.verified_cache_size,
        second_factor=second_factor,
    )
