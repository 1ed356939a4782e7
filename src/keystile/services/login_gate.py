"""The checks a password login passes before its password is looked at, in one Redis call.

`LoginGate.check` charges the action's rate limits (S27), refuses while a failed-login
backoff runs (S28), learns whether the address is a known client of the account, and
reads the account's credential-cache and user-cache entries, all in one script call
(`stores.login_gate`), which also counts a cold login among the account's cold attempts
since its last success (a login refused for hash capacity before may wait longer, S5).
A warm login (a credential entry exists) then needs no hash, so hash admission can be
decided before any PostgreSQL work; the user lookup that follows needs no Redis read of
its own.

When Redis fails, the same checks run through the rate limiter and the throttle,
which fall back to per-process counters; Redis is then left alone for
`retry_interval` seconds, so an outage costs one deadline per interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from keystile.errors import KeystileError, LimitStatus, RateLimited
from keystile.rates import Action
from keystile.services.credentials import CredentialCache, Prefetched
from keystile.services.login_throttle import LoginThrottle, refuse_while_backing_off
from keystile.services.passwords import HashTicket
from keystile.services.rate_limits import KnownClients, RateLimiter, normalise_account
from keystile.services.types import ClientInfo
from keystile.stores.cache import SharedCopy
from keystile.stores.login_gate import LoginGateKeys, RedisLoginGate
from keystile.stores.redis import REDIS_FAILURES

__all__ = ["LoginAdmission", "LoginCheck", "LoginGate"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoginCheck:
    """What the gate learnt about one login that it let through."""

    account: str  # the normalised email
    limits: LimitStatus | None  # the tightest limit, for the RateLimit-* headers
    known_client: bool
    client_failures: bool  # failures of this (account, address) to clear on success
    credential: Prefetched | None  # None: not read (Redis away, or a store it cannot read)
    user: SharedCopy | None = None  # the user-cache entry as read; None: not read
    attempts: int = 0  # the account's cold attempts since its last success, this one too

    @property
    def warm(self) -> bool:
        """True when a recent success is cached: the check will most likely need no hash."""
        return self.credential is not None and self.credential.value is not None

    @property
    def cold(self) -> bool:
        """True when the gate read no cached success: the check will need a hash.

        False for a warm login, and when the entry could not be read (Redis away); then
        the hash is admitted when it turns out to be needed.
        """
        return self.credential is not None and self.credential.value is None


@dataclass(frozen=True, slots=True)
class LoginAdmission:
    """A password login's gate and hash admission, decided before its handler ran.

    `AuthService.admit_login` makes one; `authenticate` then uses it instead of asking
    the gate again, so the login's limits are charged once. `gate` is the gate's check,
    or what the gate refused with (raised by `authenticate` in its place); `ticket` is
    the hashing place reserved for a cold login, released by whoever is done with it first.
    """

    email: str
    gate: LoginCheck | KeystileError
    ticket: HashTicket | None = None


class LoginGate:
    """Let a login through its limits and backoff, and say whether it is warm."""

    def __init__(
        self,
        store: RedisLoginGate,
        limiter: RateLimiter,
        throttle: LoginThrottle,
        known_clients: KnownClients,
        credentials: CredentialCache,
        *,
        retry_interval: float = 1.0,
        user_key: Callable[[str], str] | None = None,
        attempts_lifetime: float = 0.0,
    ) -> None:
        """`user_key` returns the Redis key of an account's cached user, read in the script;
        cold attempts are counted while `attempts_lifetime` (seconds) is over 0, each
        count kept that long after the last attempt."""
        self._store = store
        self._user_key = user_key
        self._limiter = limiter
        self._throttle = throttle
        self._known = known_clients
        self._credentials = credentials
        self._retry_interval = retry_interval
        self._retry_at = 0.0
        self._attempts_lifetime = attempts_lifetime

    async def check(self, action: Action, email: str, client: ClientInfo) -> LoginCheck:
        """Charge `action`'s limits and check the backoff; raise `RateLimited` if refused."""
        account = normalise_account(email)
        if time.monotonic() < self._retry_at:
            return await self._check_without_script(action, account, client)
        limits = self._limiter.limits_of(action)
        keys = LoginGateKeys(
            known_client=self._known.key(account, client.ip),
            per_ip=self._limiter.ip_key(action, client.ip) if limits.per_ip else None,
            per_account=self._limiter.account_key(action, account) if limits.per_account else None,
            per_account_known=(
                self._limiter.account_key(action, account, client.ip)
                if limits.per_account
                else None
            ),
            backoff_client=self._throttle.client_key(account, client.ip),
            backoff_account=self._throttle.account_key(account),
            credential=self._credentials.redis_key(account),
            user=self._user_key(account) if self._user_key else None,
            attempts=self._throttle.attempts_key(account),
        )
        try:
            found = await self._store.check(
                keys, limits.per_ip, limits.per_account, attempts_lifetime=self._attempts_lifetime
            )
        except REDIS_FAILURES as exc:
            self._retry_at = time.monotonic() + self._retry_interval
            _log.warning("login gate: redis unavailable (%s); checking per process", exc)
            return await self._check_without_script(action, account, client)
        scopes: list[str] = []
        counted: list[str] = []
        if keys.per_ip:
            scopes.append("ip")
            counted.append(keys.per_ip)
        account_key = keys.per_account_known if found.known_client else keys.per_account
        if account_key:
            scopes.append("account+client" if found.known_client else "account")
            counted.append(account_key)
        status = await self._limiter.settle(action, scopes, counted, found.limits, client, account)
        try:
            refuse_while_backing_off(found.backoff_wait)
        except RateLimited as exc:
            raise exc.with_limits(status) from None
        return LoginCheck(
            account=account,
            limits=status,
            known_client=found.known_client,
            client_failures=found.client_failures,
            credential=self._prefetched(keys.credential, found.credential),
            user=SharedCopy(found.user) if keys.user else None,
            attempts=found.attempts,
        )

    def _prefetched(self, key: str | None, found: str | None) -> Prefetched | None:
        if key is not None:
            return Prefetched(found)
        # With the cache off nothing is ever cached: known cold, admitted before any
        # PostgreSQL work like any cold login. Otherwise the store could not be read.
        return None if self._credentials.enabled else Prefetched(None)

    async def _check_without_script(
        self, action: Action, account: str, client: ClientInfo
    ) -> LoginCheck:
        status = await self._limiter.check(action, client, account)
        try:
            await self._throttle.check(account, client)
        except RateLimited as exc:
            raise exc.with_limits(status) from None
        return LoginCheck(
            account=account,
            limits=status,
            known_client=False,
            client_failures=True,
            credential=None,
        )

    async def succeeded(self, check: LoginCheck, client: ClientInfo) -> None:
        """Clear the address's failures and remember it as known, writing only what changed."""
        await self._throttle.succeeded(
            check.account,
            client,
            had_failures=check.client_failures,
            known=check.known_client,
            attempts_counted=check.attempts > 0,
        )
