"""What a bearer request needs to know about its user, cached, and how to revoke it (S17).

A verified access token is still refused when its `epoch` claim is not the user's
current token epoch. The epoch is read from an in-process cache over Redis over
PostgreSQL; every change is invalidated on all workers through pub/sub, and a
lost message costs at most the local TTL (a few seconds) of staleness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from keystile.repositories.audit import AuditLog
from keystile.repositories.refresh_tokens import RefreshTokenRepository
from keystile.repositories.users import UserRepository
from keystile.stores.cache import TieredCache

__all__ = ["TokenEpochs", "TokenHolder", "TokenRevoker"]

EPOCH_NAMESPACE = "epoch"


@dataclass(frozen=True, slots=True)
class TokenHolder:
    """The live state of a user that bearer authentication checks on every request."""

    epoch: int
    email: str
    roles: frozenset[str] = frozenset()

    def encode(self) -> list[Any]:
        return [self.epoch, self.email, sorted(self.roles)]

    @classmethod
    def decode(cls, raw: Any) -> TokenHolder:
        epoch, email, *rest = raw
        roles = frozenset(str(role) for role in rest[0]) if rest else frozenset()
        return cls(epoch=int(epoch), email=str(email), roles=roles)


@dataclass(frozen=True, slots=True)
class TokenEpochs:
    """Each user's current token epoch (and email), cached on three tiers."""

    cache: TieredCache[TokenHolder]
    users: UserRepository

    async def get(self, user_id: UUID) -> TokenHolder | None:
        """Return the user's token state, or None if it is gone or disabled."""

        async def load() -> TokenHolder | None:
            user = await self.users.select_user_by_id(user_id)
            if user is None or not user.is_active:
                return None
            return TokenHolder(
                epoch=user.token_epoch, email=user.email, roles=frozenset(user.roles)
            )

        return await self.cache.get(str(user_id), load)

    async def invalidate(self, user_id: UUID) -> None:
        """Forget the cached state here, in Redis, and on every other worker."""
        await self.cache.invalidate(str(user_id))


@dataclass(frozen=True, slots=True)
class TokenRevoker:
    """End every token of a user: refresh-token families now, access tokens by epoch."""

    refresh_tokens: RefreshTokenRepository
    epochs: TokenEpochs
    audit: AuditLog

    async def revoke_user(self, user_id: UUID, *, reason: str, ip: str = "") -> None:
        """Revoke the user's families and drop its cached epoch everywhere.

        Call after the epoch was bumped in PostgreSQL, so a reload sees the new one.
        """
        revoked = await self.refresh_tokens.revoke_user_families(user_id, reason)
        await self.epochs.invalidate(user_id)
        if revoked:
            await self.audit.record(
                "token_family_revoked", user_id=user_id, ip=ip, reason=reason, families=revoked
            )
