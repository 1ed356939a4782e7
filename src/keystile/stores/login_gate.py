"""Everything a login asks Redis before the password is looked at, in one script call.

One EVALSHA checks and charges the per-address and per-account limits of the action
(GCRA, all or nothing), reads the failed-login backoff of the (account, address) pair
and of the account, tells whether the address is a known client of the account (which
picks the per-account limit key and skips the account-wide backoff), and reads the
credential-cache and user-cache entries of the account; a login that passes them and
finds no cached credential (it will need a hash) is counted among the account's cold
attempts since its last success. That is one network round trip where there used to be
seven.

Every key of the account carries the account's hash tag; only the per-address limit
key carries the address's own, so on Redis Cluster that one check is a call of its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from redis.asyncio import Redis

from keystile.rates import Rate
from keystile.stores.rate_limits import GCRA_LUA, GcraResult, RedisCounterStore
from keystile.stores.redis import is_cluster

__all__ = ["LoginGateKeys", "LoginGateResult", "RedisLoginGate"]


@dataclass(frozen=True, slots=True)
class LoginGateKeys:
    """The Redis keys one login touches."""

    known_client: str
    per_ip: str | None
    per_account: str | None  # used when the address is not a known client
    per_account_known: str | None  # used when it is
    backoff_client: str
    backoff_account: str
    credential: str | None
    user: str | None = None  # the account's user-cache entry
    attempts: str | None = None  # the account's cold attempts since its last success


@dataclass(frozen=True, slots=True)
class LoginGateResult:
    """What the script found; limits are charged only if every one allowed the request."""

    limits: list[GcraResult]  # per-ip first, then per-account, for the rates given
    known_client: bool
    backoff_wait: float  # seconds the login must still wait (0: none)
    client_failures: bool  # the (account, address) pair has failures to clear on success
    credential: str | None  # the credential-cache entry, if one was asked for and exists
    user: bytes | None = None  # the user-cache entry (as stored), if asked for and exists
    attempts: int = 0  # cold attempts counted with this one; 0: not counted


# KEYS: known, ip-limit, account-limit, account-known-limit, backoff-client,
#       backoff-account, credential, user, attempts (unused slots hold the known key; flags
#       say which).
# ARGV: ip interval_ms, ip count, account interval_ms, account count (0 count: no limit),
#       read-credential flag (0/1), read-user flag (0/1), attempts lifetime ms (0: none).
# Returns {allowed, known, backoff_wait_ms, client_failures, credential|false, user|false,
#          attempts, then per limit checked: remaining, retry_after_ms, reset_after_ms}.
_LOGIN_GATE = (
    GCRA_LUA
    + """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = redis.call('EXISTS', KEYS[1])
local limit_keys, intervals, counts = {}, {}, {}
if tonumber(ARGV[2]) > 0 then
  table.insert(limit_keys, KEYS[2]); table.insert(intervals, tonumber(ARGV[1]))
  table.insert(counts, tonumber(ARGV[2]))
end
if tonumber(ARGV[4]) > 0 then
  if known == 1 then table.insert(limit_keys, KEYS[4]) else table.insert(limit_keys, KEYS[3]) end
  table.insert(intervals, tonumber(ARGV[3])); table.insert(counts, tonumber(ARGV[4]))
end
local allowed, limits = gcra_charge(limit_keys, intervals, counts, now)
local wait = 0
local client_until = tonumber(redis.call('HGET', KEYS[5], 'until'))
if client_until and client_until - now > wait then wait = client_until - now end
if known == 0 then
  local account_until = tonumber(redis.call('HGET', KEYS[6], 'until'))
  if account_until and account_until - now > wait then wait = account_until - now end
end
local client_failures = redis.call('EXISTS', KEYS[5])
local credential = false
if ARGV[5] == '1' then credential = redis.call('GET', KEYS[7]) end
local user = false
if ARGV[6] == '1' then user = redis.call('GET', KEYS[8]) end
-- A login let through that found no cached credential will need a hash: count it.
local attempts = 0
if ARGV[7] ~= '0' and allowed == 1 and wait <= 0 and not credential then
  attempts = redis.call('INCR', KEYS[9])
  redis.call('PEXPIRE', KEYS[9], ARGV[7])
end
local out = {allowed, known, math.ceil(wait), client_failures, credential, user, attempts}
for _, value in ipairs(limits) do table.insert(out, value) end
return out
"""
)


class RedisLoginGate:
    """Run the login gate script; Redis errors propagate (the caller falls back).

    On one Redis server (or Sentinel) that is one call. On Redis Cluster the per-address
    limit lives on its address's slot: it is charged first by a call of its own (the
    counter store's GCRA script), and only if it allows the login does the account's
    script run, so a refused address never spends the account's allowance.
    """

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_LOGIN_GATE)
        self._split = is_cluster(redis)
        self._per_ip = RedisCounterStore(redis) if self._split else None

    async def check(
        self,
        keys: LoginGateKeys,
        per_ip: Rate | None,
        per_account: Rate | None,
        *,
        attempts_lifetime: float = 0.0,
    ) -> LoginGateResult:
        """Charge the login's limits and read its backoff, known-client flag and credential.

        With `keys.attempts` and a lifetime (seconds), a cold login let through is
        counted among the account's cold attempts, kept for that long after the last.
        """
        if self._per_ip is None or keys.per_ip is None or per_ip is None:
            return await self._check(keys, per_ip, per_account, attempts_lifetime)
        ip_limit = (await self._per_ip.gcra([keys.per_ip], [per_ip]))[0]
        if not ip_limit.allowed:
            unchecked = [
                GcraResult(rate=rate, allowed=False, remaining=0, retry_after=0, reset_after=0)
                for rate in (per_account,)
                if rate is not None
            ]
            return LoginGateResult(
                limits=[ip_limit, *unchecked],
                known_client=False,
                backoff_wait=0.0,
                client_failures=False,
                credential=None,
            )
        found = await self._check(
            dataclasses.replace(keys, per_ip=None), None, per_account, attempts_lifetime
        )
        allowed = all(limit.allowed for limit in found.limits)
        return dataclasses.replace(
            found, limits=[dataclasses.replace(ip_limit, allowed=allowed), *found.limits]
        )

    async def _check(
        self,
        keys: LoginGateKeys,
        per_ip: Rate | None,
        per_account: Rate | None,
        attempts_lifetime: float,
    ) -> LoginGateResult:
        spare = keys.known_client
        counted = keys.attempts is not None and attempts_lifetime > 0
        raw = await self._script(
            keys=[
                keys.known_client,
                keys.per_ip or spare,
                keys.per_account or spare,
                keys.per_account_known or spare,
                keys.backoff_client,
                keys.backoff_account,
                keys.credential or spare,
                keys.user or spare,
                keys.attempts or spare,
            ],
            args=[
                per_ip.interval_ms if per_ip else 0,
                per_ip.count if per_ip else 0,
                per_account.interval_ms if per_account else 0,
                per_account.count if per_account else 0,
                1 if keys.credential else 0,
                1 if keys.user else 0,
                max(1, int(attempts_lifetime * 1000)) if counted else 0,
            ],
        )
        allowed = bool(raw[0])
        rates = [rate for rate in (per_ip, per_account) if rate is not None]
        limits = [
            GcraResult(
                rate=rate,
                allowed=allowed,
                remaining=int(raw[7 + 3 * i]),
                retry_after=int(raw[8 + 3 * i]) / 1000,
                reset_after=int(raw[9 + 3 * i]) / 1000,
            )
            for i, rate in enumerate(rates)
        ]
        credential, user = raw[4], raw[5]
        return LoginGateResult(
            limits=limits,
            known_client=bool(raw[1]),
            backoff_wait=int(raw[2]) / 1000,
            client_failures=bool(raw[3]),
            credential=credential.decode() if isinstance(credential, bytes) else None,
            user=user if isinstance(user, bytes) else None,
            attempts=int(raw[6]),
        )
