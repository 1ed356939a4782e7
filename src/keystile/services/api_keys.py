"""API keys (personal access tokens): create, list, revoke, and check one per request (S43).

A key is `ks_pat_<id>_<secret><checksum>` (see `opaque_secrets`). Checking it costs
no I/O when warm: the checksum is verified first (a bad one is refused before any
lookup), then the record is read by its public id through a `TieredCache`
(in-process over Redis over PostgreSQL, invalidated on every worker by pub/sub, the
same machinery and bound as session revocation), the HMAC of the secret is compared
in constant time, and the owner's state comes from the token-epoch cache (so a
disabled user's keys stop at once). `last_used_at` is written at most once per
touch interval.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from keystile.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InvalidApiKey,
    InvalidInput,
    NotFound,
)
from keystile.repositories.api_keys import ApiKeyRecord, PostgresApiKeyRepository
from keystile.repositories.audit import AuditLog
from keystile.secret_keys import note_fallback_used
from keystile.services.opaque_secrets import (
    CHECKSUM_LENGTH,
    Hmac,
    has_valid_checksum,
    random_base62,
    with_checksum,
)
from keystile.services.revocation import TokenEpochs
from keystile.services.touches import Touches
from keystile.services.types import ClientInfo, Principal
from keystile.stores.cache import TieredCache

__all__ = ["API_KEY_PREFIX", "ApiKeyService", "NewApiKey", "is_api_key"]

API_KEY_PREFIX = "ks_pat_"
_ID_LENGTH = 12  # ~71 bits: ids are public, only unique
_SECRET_LENGTH = 32  # ~190 bits from the CSPRNG
_KEY = re.compile(
    rf"{API_KEY_PREFIX}([0-9A-Za-z]{{{_ID_LENGTH}}})_([0-9A-Za-z]{{{_SECRET_LENGTH}}})"
    rf"[0-9A-Za-z]{{{CHECKSUM_LENGTH}}}"
)
_LIST_LIMIT = 1000

ApiKeyCache = TieredCache[ApiKeyRecord]


def is_api_key(token: str) -> bool:
    """True when a bearer token claims to be an API key (it may still be malformed)."""
    return token.startswith(API_KEY_PREFIX)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key just created: `key` is shown to its owner this once and never stored."""

    record: ApiKeyRecord
    key: str


@dataclass(frozen=True, slots=True)
class ApiKeyService:
    """Create, list, revoke and check API keys."""

    repository: PostgresApiKeyRepository
    cache: ApiKeyCache
    epochs: TokenEpochs
    audit: AuditLog
    _: KW_ONLY
    digests: Hmac
    scopes: frozenset[str]
    max_days: int
    per_user: int
    touch_interval: timedelta
    clock: Callable[[], datetime] = _utcnow
    touches: Touches = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "touches", Touches(self.cache))

    async def create(
        self,
        principal: Principal,
        name: str,
        scopes: Iterable[str],
        expires_in_days: int,
        client: ClientInfo,
    ) -> NewApiKey:
        """Create a key for the caller; its scopes must be among the caller's own.

        An API key cannot create keys (that would let a leaked key outlive its expiry).
        """
        if principal.via == "api_key":
            raise Forbidden("An API key cannot create API keys; log in with your password.")
        requested = frozenset(scopes)
        allowed = principal.scopes & self.scopes if principal.via == "bearer" else self.scopes
        if not requested:
            raise InvalidInput("Choose at least one scope.")
        if not requested <= allowed:
            unknown = ", ".join(sorted(requested - allowed))
            raise InvalidInput(f"You cannot grant scopes you do not hold: {unknown}.")
        if not 1 <= expires_in_days <= self.max_days:
            raise InvalidInput(f"expires_in_days must be between 1 and {self.max_days}.")
        key_id, secret = random_base62(_ID_LENGTH), random_base62(_SECRET_LENGTH)
        record = await self.repository.insert_key(
            key_id,
            principal.user_id,
            name,
            self.digests.digest(f"{key_id}.{secret}"),
            sorted(requested),
            self.clock() + timedelta(days=expires_in_days),
            limit=self.per_user,
            secret_key_id=self.digests.key_id,
        )
        if record is None:
            raise Conflict(f"You already have {self.per_user} API keys; revoke one first.")
        await self.audit.record(
            "api_key_created",
            user_id=principal.user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            key_id=key_id,
            scopes=sorted(requested),
        )
        return NewApiKey(record, with_checksum(f"{API_KEY_PREFIX}{key_id}_{secret}"))

    async def list_keys(self, user_id: UUID) -> list[ApiKeyRecord]:
        """Return the user's unrevoked keys, newest first (expired ones too, marked by date)."""
        return await self.repository.select_user_keys(user_id, _LIST_LIMIT)

    async def count_by_secret_key(self) -> dict[str | None, int]:
        """Return how many live keys are under each secret key id (None: not recorded)."""
        return await self.repository.count_live_by_secret_key()

    async def revoke(self, principal: Principal, key_id: str, client: ClientInfo) -> None:
        """Revoke one of the caller's keys; every worker refuses it within the cache bound.

        `NotFound` for an unknown id, another user's key or one already revoked, alike.
        """
        if not await self.repository.revoke_key(principal.user_id, key_id):
            raise NotFound("No such API key.")
        await self.cache.invalidate(key_id)
        await self.audit.record(
            "api_key_revoked",
            user_id=principal.user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            key_id=key_id,
        )

    async def revoke_all(self, user_id: UUID) -> int:
        """Revoke every key of the user (when it is disabled); return how many."""
        ids = await self.repository.revoke_user_keys(user_id)
        await asyncio.gather(*(self.cache.invalidate(key_id) for key_id in ids))
        return len(ids)

    async def authenticate(self, key: str) -> Principal:
        """Return the principal of a live API key; raise `InvalidApiKey` for any other.

        One error for every failure, and the same HMAC comparison whether or not the
        id exists, so an answer reveals nothing about which part was wrong.
        """
        match = _KEY.fullmatch(key)
        if match is None or not has_valid_checksum(key):
            raise InvalidApiKey()
        key_id, secret = match.group(1), match.group(2)
        record = await self.cache.get(key_id, lambda: self.repository.select_key(key_id))
        expected = self.digests.dummy if record is None else record.secret_hmac
        under = self.digests.match(f"{key_id}.{secret}", expected)
        now = self.clock()
        if record is None or under is None or record.revoked_at is not None:
            raise InvalidApiKey()
        if now >= record.expires_at:
            raise InvalidApiKey()
        holder = await self.epochs.get(record.user_id)
        if holder is None:  # the user is disabled or gone
            raise InvalidApiKey()
        if under:
            await self._redigest(record, secret)
        if record.last_used_at is None or now - record.last_used_at >= self.touch_interval:
            await self.touches.touch(key_id, lambda: self.repository.touch_key(key_id, now))
        return Principal(
            user_id=record.user_id,
            email=holder.email,
            via="api_key",
            # A scope the deployment no longer offers is no longer granted.
            scopes=frozenset(record.scopes) & self.scopes,
            api_key_id=key_id,
        )

    async def _redigest(self, record: ApiKeyRecord, secret: str) -> None:
        """Store the HMAC of a key that matched under a previous secret key under the current.

        Then the key no longer needs the fallback. Bookkeeping like a touch: PostgreSQL
        being down leaves it for a later use; the UPDATE only replaces the digest it read.
        Once it succeeded, every cached copy is replaced with the record as now stored.
        """
        note_fallback_used("api_key")
        digest = self.digests.digest(f"{record.id}.{secret}")

        async def replace() -> None:
            await self.repository.replace_digest(
                record.id, record.secret_hmac, digest, self.digests.key_id
            )
            # The touch keeps the outage copy: with the old HMAC, the key would answer 401
            # through a PostgreSQL outage once the fallback is dropped. Read back, not
            # assumed: a worker not yet rolled may have stored its own digest meanwhile.
            try:
                stored = await self.repository.select_key(record.id)
            except DependencyUnavailable:
                await self.cache.invalidate(record.id)  # drop the old HMAC's copies at least
                raise
            if stored is None:
                await self.cache.invalidate(record.id)
            else:
                await self.cache.refresh(record.id, stored)

        await self.touches.touch(record.id, replace)
