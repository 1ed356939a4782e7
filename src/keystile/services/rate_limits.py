"""Rate limits per client address and per account for named actions (S27).

`await limiter.check("login", client, account=email)` charges one request to every
limit configured for the action, atomically and all or nothing, and raises
`RateLimited` when any of them is spent. The web layer's `rate_limited` decorator
calls it for a route; services may call it directly.

Counter keys are HMACs of the address or account under a key derived from the
secret key, so Redis never holds emails or addresses, and a caller cannot aim at
another key by choosing an odd email. Each key carries a hash tag naming its subject
(the first part: an account or an address), so every key of one account lands on one
Redis Cluster slot and the scripts that read several of them run there.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from uuid import UUID

from keystile import metrics
from keystile.errors import LimitStatus, RateLimited
from keystile.rates import Action, Rate, RateLimits
from keystile.repositories.audit import AuditLog
from keystile.services.types import ClientInfo
from keystile.stores.cache import LocalCache
from keystile.stores.rate_limits import CounterStore, GcraResult

__all__ = ["CounterKeys", "KnownClients", "RateLimiter", "normalise_account"]

# A refused key is audited at most once per this many seconds per worker, so a
# flood of refusals does not become a flood of writes to PostgreSQL.
_AUDIT_EVERY = 60.0

# Actions whose account is named by a credential the caller holds (a refresh token's
# tagged selector), so no stranger can spend the owner's allowance: a known client
# needs no allowance of its own (S28), and the lookup's round trip is saved.
_NAMED_BY_CREDENTIAL = frozenset({Action.REFRESH})


def normalise_account(account: str | UUID) -> str:
    """Return the form an account is counted under: emails match case-insensitively."""
    return str(account).strip().lower()


class CounterKeys:
    """Name counter keys without putting emails or addresses into Redis."""

    def __init__(self, secret_key: bytes) -> None:
        self._key = hmac.new(secret_key, b"keystile counter keys", hashlib.sha256).digest()

    def digest(self, *parts: str) -> str:
        """Return a short keyed hash of `parts` (128 bits, hex)."""
        message = "\0".join(parts).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def tag(self, subject: str) -> str:
        """Return the hash tag (`{...}`) every key of `subject` carries (Redis Cluster slots)."""
        return "{" + self.digest("subject", subject)[:16] + "}"

    def name(self, kind: str, subject: str, *parts: str) -> str:
        """Return the subject's hash tag and the keyed hash of `kind`, `subject`, `parts`:
        a key without its prefix (`key`), for stores that add their own."""
        return self.tag(subject) + self.digest(kind, subject, *parts)

    def key(self, kind: str, subject: str, *parts: str) -> str:
        """Return the key of `kind` for `subject` (and `parts`), tagged with the subject."""
        return f"keystile:{kind}:{self.name(kind, subject, *parts)}"


@dataclass(frozen=True, slots=True)
class KnownClients:
    """Remember which client addresses an account has logged in from (S28).

    A known address gets its own per-account allowance and skips the per-account
    login backoff, so an attacker spending an account's allowance from elsewhere
    does not lock its owner out.
    """

    store: CounterStore
    keys: CounterKeys
    _: KW_ONLY
    ttl: float

    def key(self, account: str | UUID, ip: str) -> str:
        """Return the counter key that marks `ip` as a known client of `account`."""
        return self.keys.key("known-client", normalise_account(account), ip)

    async def remember(self, account: str | UUID, ip: str) -> None:
        await self.store.mark(self.key(account, ip), self.ttl)

    async def is_known(self, account: str | UUID, ip: str) -> bool:
        return await self.store.is_marked(self.key(account, ip))


@dataclass(frozen=True, slots=True)
class RateLimiter:
    """Check and charge the per-address and per-account limits of named actions."""

    store: CounterStore
    keys: CounterKeys
    known_clients: KnownClients
    audit: AuditLog
    limits: Mapping[Action, RateLimits]  # a copy: later changes to the caller's do not count
    # The keys whose refusal was audited lately (at most once per _AUDIT_EVERY seconds).
    _audited: LocalCache[str, bool] = field(
        init=False,
        repr=False,
        default_factory=lambda: LocalCache(ttl=_AUDIT_EVERY, max_entries=10_000),
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "limits", dict(self.limits))

    @property
    def actions(self) -> frozenset[Action]:
        return frozenset(self.limits)

    def limits_of(self, action: Action) -> RateLimits:
        """Return the limits configured for `action`."""
        return self.limits[action]

    def ip_key(self, action: Action, ip: str) -> str:
        """Return the counter key of `action`'s per-address limit for `ip`."""
        return self.keys.key(f"rl:{action}:{self.limits[action].per_ip}:ip", ip)

    def account_key(self, action: Action, account: str | UUID, known_ip: str | None = None) -> str:
        """Return the counter key of `action`'s per-account limit.

        `known_ip` is the address when it is a known client of the account: it then
        counts under an allowance of its own (S28).
        """
        scope, parts = _account_scope(normalise_account(account), known_ip)
        return self.keys.key(f"rl:{action}:{self.limits[action].per_account}:{scope}", *parts)

    async def check(
        self, action: Action, client: ClientInfo, account: str | UUID | None = None
    ) -> LimitStatus | None:
        """Charge one request of `action`; return the tightest limit, or raise `RateLimited`.

        `account` is the email (before login) or the user id (after); None skips the
        per-account limit. Returns None when the action has no limits at all.
        """
        limits = self.limits[action]
        scopes: list[str] = []
        keys: list[str] = []
        rates: list[Rate] = []
        if limits.per_ip is not None:
            scopes.append("ip")
            keys.append(self.ip_key(action, client.ip))
            rates.append(limits.per_ip)
        if limits.per_account is not None and account is not None:
            known_ip = None
            if action not in _NAMED_BY_CREDENTIAL:
                known = await self.known_clients.is_known(account, client.ip)
                known_ip = client.ip if known else None
            scopes.append(_account_scope(normalise_account(account), known_ip)[0])
            keys.append(self.account_key(action, account, known_ip))
            rates.append(limits.per_account)
        if not keys:
            return None
        return await self.settle(
            action, scopes, keys, await self.store.gcra(keys, rates), client, account
        )

    async def settle(
        self,
        action: Action,
        scopes: list[str],
        keys: list[str],
        results: list[GcraResult],
        client: ClientInfo,
        account: str | UUID | None,
    ) -> LimitStatus | None:
        """Turn checked limits into the tightest status, or audit and raise `RateLimited`."""
        if not results:
            return None
        refused = [(result, i) for i, result in enumerate(results) if result.retry_after > 0]
        if refused:
            worst, index = max(refused, key=lambda item: item[0].retry_after)
            await self._audit_refusal(action, scopes[index], keys[index], client, account)
            metrics.RATE_LIMITED.labels(f"{action}_per_{scopes[index]}").inc()
            raise RateLimited(math.ceil(worst.retry_after), status=_status(worst))
        return _status(min(results, key=lambda result: result.remaining))

    async def _audit_refusal(
        self, action: Action, scope: str, key: str, client: ClientInfo, account: str | UUID | None
    ) -> None:
        if self._audited.get(key):
            return
        self._audited.set(key, True)
        await self.audit.record(
            "rate_limited",
            user_id=account if isinstance(account, UUID) else None,
            ip=client.ip,
            user_agent=client.user_agent,
            action=action,
            scope=scope,
        )


def _account_scope(name: str, known_ip: str | None) -> tuple[str, tuple[str, ...]]:
    if known_ip is None:
        return "account", (name,)
    return "account+client", (name, known_ip)


def _status(result: GcraResult) -> LimitStatus:
    return LimitStatus(
        limit=result.rate.count,
        remaining=max(0, result.remaining),
        reset_after=math.ceil(result.reset_after),
        period=math.ceil(result.rate.period),
    )
