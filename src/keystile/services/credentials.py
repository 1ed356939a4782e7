"""The credential check, with a cache of recent successes in front of the slow hash.

After a successful slow verification, HMAC(key, password_hash || password) is
cached for that account for a short TTL (aiocache's `cached`, Redis backend). A
repeat login recomputes the HMAC and compares it in constant time: microseconds
instead of a hash. Only successes are written. The stored HMAC covers the stored
hash, so after a password change (or rehash) old entries can never match, and a
wrong password never matches the entry of the right one; in both cases the slow
path decides. Without the key, an entry read out of Redis is worthless.

Concurrent checks of the same user and password share one slow verification, and
for a few seconds after it each worker also remembers the success itself: a login that
read the shared entry just before the success was written (a straggler of a burst of
one user's logins) needs no second hash.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from aiocache.base import BaseCache

from keystile import metrics
from keystile.services.passwords import HashTicket, PasswordHasher
from keystile.stores.cache import LocalCache, SingleFlight
from keystile.stores.credential_store import OptionalCached
from keystile.stores.redis_batch import RedisBatch

__all__ = ["CredentialCache", "Prefetched"]

# Unknown and disabled accounts verify against the dummy hash under this reference (S6).
_NO_ACCOUNT = "{no-account}"

# How long a worker remembers a success it verified itself (capped by the cache's TTL).
_RECENT_SECONDS = 5.0

# Set when a check had to hash: aiocache's wrapper runs `_slow_check` in the caller's
# context, so after the call this tells a cache hit from a miss.
_HASHED: ContextVar[bool] = ContextVar("credential_check_hashed", default=False)


@dataclass(frozen=True, slots=True)
class Prefetched:
    """The credential-cache entry of an account as the login gate read it (None: absent)."""

    value: str | None


class CredentialCache:
    """Check a password against a stored hash, skipping the hash for recent successes.

    Entries are kept per account (the normalised email, under a keyed hash, so Redis
    holds no emails): the login gate reads the entry in its one Redis call, before the
    user is even looked up, so a login can be known to be warm before any other work.
    """

    def __init__(
        self,
        hasher: PasswordHasher,
        store: BaseCache,
        *,
        key: bytes,
        ttl: float,
        namespace: str | None = None,
        retry_interval: float = 1.0,
        account_tag: Callable[[str], str] | None = None,
        batch: RedisBatch | None = None,
    ) -> None:
        """`key` is a secret used only for these HMACs; `ttl` 0 turns the cache off.

        `namespace` is the Redis namespace of `store` when the login gate may read its
        entries directly (the composition root's RedisCache); None otherwise.
        `account_tag` returns the Redis hash tag of an account's keys (`CounterKeys.tag`).
        `batch` (with `namespace` only) lets a success's write join a login's one round trip.
        """
        self._hasher = hasher
        self._key = key
        self._account_tag = account_tag
        self._enabled = ttl > 0
        self._namespace = namespace if self._enabled else None
        self._flight: SingleFlight[tuple[str, str], str | None] = SingleFlight()
        # (account ref, digest) of successes verified here moments ago; a TTL of 0 (the
        # cache off) keeps nothing.
        self._recent: LocalCache[tuple[str, str], bool] = LocalCache(
            ttl=min(ttl, _RECENT_SECONDS), max_entries=10_000
        )
        self._cached = OptionalCached(
            store,
            ttl=ttl,
            key_builder=lambda _f, account_ref, *_rest, **_kwargs: account_ref,
            skip_cache_func=lambda digest: digest is None,
            retry_interval=retry_interval,
            batch=batch if self._namespace is not None else None,
        )
        self._verify_and_remember = self._cached(self._slow_check)

    @property
    def enabled(self) -> bool:
        """False when the TTL is 0: nothing is ever cached, so every check hashes."""
        return self._enabled

    def account_ref(self, account: str) -> str:
        """Return the cache key of a normalised account: a keyed hash in a hash tag.

        With `account_tag` (the counter keys' tag), the entry shares its Redis Cluster
        slot with the account's counters, so the login gate reads it in the same script.
        """
        digest = hmac.new(self._key, b"account\x00" + account.encode(), hashlib.sha256)
        if self._account_tag is not None:
            return self._account_tag(account) + digest.hexdigest()[:32]
        return "{" + digest.hexdigest()[:32] + "}"

    def redis_key(self, account: str) -> str | None:
        """Return the Redis key the login gate may read for `account`, or None if it may not."""
        if self._namespace is None:
            return None
        return f"{self._namespace}:{self.account_ref(account)}"

    async def verify(
        self,
        account: str,
        password_hash: str,
        password: str,
        *,
        prefetched: Prefetched | None = None,
        ticket: HashTicket | None = None,
    ) -> bool:
        """Return whether `password` matches `password_hash`, the stored hash of `account`.

        `prefetched` is the entry the login gate already read (then the cache is not read
        again); `ticket` the hashing place reserved for the slow path. Raises `Overloaded`
        when the slow path is needed, no ticket was given and the hash queue is full.
        """
        digest = self._digest(password_hash, password)
        cached = prefetched.value if prefetched is not None else None
        if cached is not None and hmac.compare_digest(cached, digest):
            metrics.cache_lookups("credentials", "hit").inc()
            return True
        ref = self.account_ref(account)
        if self._recent.get((ref, digest)):
            metrics.cache_lookups("credentials", "hit").inc()
            return True
        found = await self._flight.run(
            (ref, digest),
            lambda: self._check(ref, password_hash, password, digest, prefetched, ticket),
        )
        if found is None or not hmac.compare_digest(found, digest):
            return False
        self._recent.set((ref, digest), True)
        return True

    async def verify_dummy(self, password: str, *, ticket: HashTicket | None = None) -> bool:
        """Spend what a failed check of a real account spends, and return False (S6)."""
        await self._slow_check(_NO_ACCOUNT, self._hasher.dummy_hash, password, ticket=ticket)
        metrics.cache_lookups("credentials", "miss").inc()
        return False

    async def _check(
        self,
        ref: str,
        password_hash: str,
        password: str,
        digest: str,
        prefetched: Prefetched | None,
        ticket: HashTicket | None,
    ) -> str | None:
        if not self._enabled:
            return await self._slow_check(ref, password_hash, password, ticket=ticket)
        _HASHED.set(False)
        found: str | None
        if prefetched is not None:
            # The gate's read is the cache read: absent or not matching, only the hash is left.
            found = await self._verify_and_remember(
                ref, password_hash, password, ticket=ticket, cache_read=False
            )
        else:
            found = await self._verify_and_remember(ref, password_hash, password, ticket=ticket)
            if found is not None and not hmac.compare_digest(found, digest):
                # A cached success for another password or an older hash: verify for real
                # (and remember this one if it is right).
                found = await self._verify_and_remember(
                    ref, password_hash, password, ticket=ticket, cache_read=False
                )
        result = "miss" if _HASHED.get() else "hit"
        metrics.cache_lookups("credentials", result).inc()
        return found

    async def _slow_check(
        self, _ref: str, password_hash: str, password: str, *, ticket: HashTicket | None = None
    ) -> str | None:
        """Return the credential HMAC if the password matches, else None (never cached)."""
        _HASHED.set(True)
        if await self._hasher.verify(password_hash, password, ticket=ticket):
            return self._digest(password_hash, password)
        return None

    def _digest(self, password_hash: str, password: str) -> str:
        # NUL cannot occur in a stored hash, so the split between the two is unambiguous.
        message = password_hash.encode() + b"\x00" + password.encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
