"""The credential check, with a cache of recent successes in front of the slow hash.

After a successful slow verification, HMAC(key, password_hash || password) is
cached for that user for a short TTL (aiocache's `cached`, Redis backend). A
repeat login recomputes the HMAC and compares it in constant time: microseconds
instead of a hash. Only successes are written. The stored HMAC covers the stored
hash, so after a password change (or rehash) old entries can never match, and a
wrong password never matches the entry of the right one; in both cases the slow
path decides. Without the key, an entry read out of Redis is worthless.

Concurrent checks of the same user and password share one slow verification.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from contextvars import ContextVar
from uuid import UUID

from aiocache.base import BaseCache

from keystile import metrics
from keystile.services.passwords import PasswordHasher
from keystile.stores.cache import SingleFlight
from keystile.stores.credential_store import OptionalCached

__all__ = ["CredentialCache"]

# Unknown and disabled accounts take the same path, cache lookup included, under this id (S6).
_NO_ACCOUNT = uuid.UUID(int=0)
# Set when a check had to hash: aiocache's wrapper runs `_slow_check` in the caller's
# context, so after the call this tells a cache hit from a miss.
_HASHED: ContextVar[bool] = ContextVar("credential_check_hashed", default=False)


class CredentialCache:
    """Check a password against a stored hash, skipping the hash for recent successes."""

    def __init__(
        self,
        hasher: PasswordHasher,
        store: BaseCache,
        *,
        key: bytes,
        ttl: float,
        retry_interval: float = 1.0,
    ) -> None:
        """`key` is a secret used only for these HMACs; `ttl` 0 turns the cache off."""
        self._hasher = hasher
        self._key = key
        self._enabled = ttl > 0
        self._flight: SingleFlight[tuple[UUID, str], str | None] = SingleFlight()
        self._cached = OptionalCached(
            store,
            ttl=ttl,
            key_builder=lambda _f, user_id, *_rest: str(user_id),
            skip_cache_func=lambda digest: digest is None,
            retry_interval=retry_interval,
        )
        self._verify_and_remember = self._cached(self._slow_check)

    async def verify(self, user_id: UUID, password_hash: str, password: str) -> bool:
        """Return whether `password` matches `password_hash`, the stored hash of `user_id`.

        Raises `Overloaded` when the slow path is needed and the hash queue is full.
        """
        digest = self._digest(password_hash, password)
        found = await self._flight.run(
            (user_id, digest), lambda: self._check(user_id, password_hash, password, digest)
        )
        return found is not None and hmac.compare_digest(found, digest)

    async def verify_dummy(self, password: str) -> bool:
        """Spend what a failed check of a real account spends, and return False (S6)."""
        await self.verify(_NO_ACCOUNT, self._hasher.dummy_hash, password)
        return False

    async def _check(
        self, user_id: UUID, password_hash: str, password: str, digest: str
    ) -> str | None:
        if not self._enabled:
            return await self._slow_check(user_id, password_hash, password)
        _HASHED.set(False)
        found: str | None = await self._verify_and_remember(user_id, password_hash, password)
        if found is not None and not hmac.compare_digest(found, digest):
            # The cached success was for another password or an older hash: verify for real
            # (and remember this one if it is right).
            found = await self._verify_and_remember(
                user_id, password_hash, password, cache_read=False
            )
        result = "miss" if _HASHED.get() else "hit"
        metrics.CACHE_LOOKUPS.labels("credentials", result).inc()
        return found

    async def _slow_check(self, user_id: UUID, password_hash: str, password: str) -> str | None:
        """Return the credential HMAC if the password matches, else None (never cached)."""
        _HASHED.set(True)
        if await self._hasher.verify(password_hash, password):
            return self._digest(password_hash, password)
        return None

    def _digest(self, password_hash: str, password: str) -> str:
        # NUL cannot occur in a stored hash, so the split between the two is unambiguous.
        message = password_hash.encode() + b"\x00" + password.encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
