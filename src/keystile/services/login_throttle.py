"""Failed-login backoff that slows guessing without locking the owner out (S28, S6).

Two counters of failures, each with exponential backoff once its free failures
are spent:

- per (email, client address): strict, few free failures. Slows one guesser on
  one account; a success from that address clears it.
- per email, from anywhere: lenient, more free failures. Slows a guesser who
  spreads over many addresses. Addresses the account has logged in from before
  ("known clients") skip it, so while an account is under attack from elsewhere
  its owner still logs in from home; anyone else waits at most the longest delay.

A blocked attempt is refused before the password is looked at, with the same
`RateLimited` error for every email, registered or not: failures for unknown
emails count the same way, so the throttle tells nothing about accounts (S6).
Password change is never throttled here: the owner proves a session, and only
the rate limit of that action applies (S28).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import KW_ONLY, dataclass
from uuid import UUID

from keystile import metrics
from keystile.errors import RateLimited
from keystile.repositories.audit import AuditLog
from keystile.services.rate_limits import CounterKeys, KnownClients, normalise_account
from keystile.services.types import ClientInfo
from keystile.stores.rate_limits import Backoff, CounterStore

__all__ = ["LoginThrottle", "refuse_while_backing_off"]


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    """Refuse logins while their email or (email, address) pair is backing off."""

    store: CounterStore
    keys: CounterKeys
    known_clients: KnownClients
    audit: AuditLog
    _: KW_ONLY
    per_client: Backoff
    per_account: Backoff

    def client_key(self, account: str, ip: str) -> str:
        """Return the backoff key of (account, address); `account` normalised."""
        return self.keys.key("login-backoff:client", account, ip)

    def account_key(self, account: str) -> str:
        """Return the account-wide backoff key; `account` normalised."""
        return self.keys.key("login-backoff:account", account)

    def attempts_key(self, account: str) -> str:
        """Return the key counting the account's cold attempts since its last success.

        The login gate counts them; hash admission lets a login refused before wait longer
        (`HashAdmission`). A success clears it.
        """
        return self.keys.key("login-attempts", account)

    async def check(self, email: str, client: ClientInfo) -> None:
        """Raise `RateLimited` if a login for `email` from `client` must wait."""
        account = normalise_account(email)
        keys = [self.client_key(account, client.ip)]
        if not await self.known_clients.is_known(account, client.ip):
            keys.append(self.account_key(account))
        refuse_while_backing_off(await self.store.backoff_wait(keys))

    async def failed(self, email: str, client: ClientInfo, user_id: UUID | None) -> None:
        """Count a failed login (both backoffs, one call); audit when a backoff starts or grows."""
        account = normalise_account(email)
        counted = await self.store.backoff_fail(
            [
                (self.client_key(account, client.ip), self.per_client),
                (self.account_key(account), self.per_account),
            ]
        )
        for scope, result in zip(("client", "account"), counted, strict=True):
            if result.delay > 0:
                await self.audit.record(
                    "login_lockout",
                    user_id=user_id,
                    ip=client.ip,
                    user_agent=client.user_agent,
                    scope=scope,
                    failures=result.failures,
                    delay_seconds=result.delay,
                    # Lets an operator group lockouts of one (possibly unknown) email
                    # without the log holding the email itself.
                    account_ref=self.keys.digest("account-ref", account)[:16],
                )

    async def succeeded(
        self,
        email: str,
        client: ClientInfo,
        *,
        had_failures: bool = True,
        known: bool = False,
        attempts_counted: bool = False,
    ) -> None:
        """Clear this address's failures and remember it as a known client of the account.

        The per-email count is left to decay: an attacker does not get fresh free
        guesses each time the owner logs in. When the caller already knows that the
        address has no failures or is known (the login gate read both), nothing is
        written for that part. `attempts_counted`: the account's cold attempts were
        counted (this one among them); the count is cleared with the failures.
        """
        account = normalise_account(email)
        writes = []
        forget = [self.client_key(account, client.ip)] if had_failures else []
        if attempts_counted:
            forget.append(self.attempts_key(account))
        if forget:
            writes.append(self.store.forget(forget))
        if not known:
            writes.append(self.known_clients.remember(account, client.ip))
        await asyncio.gather(*writes)


def refuse_while_backing_off(wait: float) -> None:
    """Raise `RateLimited` if a backoff still has `wait` seconds to run."""
    if wait > 0:
        metrics.RATE_LIMITED.labels("login_backoff").inc()
        raise RateLimited(math.ceil(wait))
