"""The second step of a login, and step-up with a TOTP or recovery code (S40, S42).

A password login of a user with a factor ends in `MfaRequired`: a random
`mfa_token`, stored (hashed) as a one-time challenge bound to the user, the kind of
login (session or tokens) and its scope. `complete` checks a TOTP or recovery code
against that user and spends the token; only then does the caller start a session
or token family. The second step costs HMACs and a TOTP computation, never a
password hash. The codes, and the backoff wrong ones feed, are `FactorCodes`
(`services/mfa_codes.py`), which enrolment (`services/mfa_factors.py`) shares.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import KW_ONLY, dataclass
from typing import Protocol
from uuid import UUID

import asyncpg

from keystile.errors import InvalidMfaCode, InvalidMfaToken, MfaRequired
from keystile.repositories.audit import AuditEntry, AuditLog, BufferedAuditLog
from keystile.repositories.cached_users import CachedUserRepository
from keystile.repositories.mfa import FactorsChanged, PostgresMfaRepository
from keystile.repositories.users import User
from keystile.secret_keys import note_fallback_used
from keystile.services.account_security import active_user
from keystile.services.mfa_codes import FactorCodes, normalise_recovery_code
from keystile.services.types import ClientInfo, Principal
from keystile.stores.challenges import ChallengeStore
from keystile.stores.redis_batch import RedisBatch

__all__ = ["FactorNotices", "MfaService", "SecondStep", "factor_notice", "mfa_succeeded"]


class FactorNotices(Protocol):
    """Where factor-change notices go: the mail capability's outbox (`AccountNotices`)."""

    async def factor_changed_in_transaction(
        self, connection: asyncpg.Connection, user_id: UUID, email: str, what: str
    ) -> None: ...


def factor_notice(notices: FactorNotices, what: str) -> FactorsChanged:
    """Return the `then` of a factor change: it queues the notice `what` in its transaction."""

    async def notify(connection: asyncpg.Connection, user_id: UUID, email: str) -> None:
        await notices.factor_changed_in_transaction(connection, user_id, email, what)

    return notify


@dataclass(frozen=True, slots=True)
class SecondStep:
    """A completed second step: who, how, and for which kind of login.

    `event` is its `mfa_succeeded` audit event, for the caller to commit with the
    session or token family it starts (`proved=`): one statement, both or neither.
    """

    user: User
    amr: tuple[str, ...]
    mode: str  # "session" or "tokens"
    scope: str | None
    event: AuditEntry


def mfa_succeeded(user: User, client: ClientInfo, amr: tuple[str, ...]) -> AuditEntry:
    """Return the `mfa_succeeded` event of a login completed as `amr` says, for the caller
    to commit with the session or token family it starts."""
    return AuditEntry("mfa_succeeded", user.id, client.ip, client.user_agent, {"amr": list(amr)})


@dataclass(frozen=True, slots=True)
class MfaService:
    """Run the second step of a login; check a TOTP or recovery code (step-up too).

    `later` takes events that commit with nothing (`mfa_challenged`), written in
    batches as failed logins' are.
    """

    repository: PostgresMfaRepository
    users: CachedUserRepository
    challenges: ChallengeStore
    audit: AuditLog
    later: BufferedAuditLog
    codes: FactorCodes
    _: KW_ONLY
    challenge_ttl: int
    notices: FactorNotices
    writes: RedisBatch | None = None  # the batch `challenges` sends with (one round trip)

    # --- the login's second step --------------------------------------------------------

    async def require(
        self, user: User, client: ClientInfo, *, mode: str, scope: str | None = None
    ) -> None:
        """Raise `MfaRequired` with a fresh mfa_token if `user` has a factor (S42)."""
        if not user.mfa_factors:
            return
        token = secrets.token_urlsafe(32)
        # The user's cache key, so the second step finds the user where this login did.
        pending = {"user": str(user.id), "key": self.users.cache_key(user), "mode": mode}
        await self.challenges.put(
            _token_key(token), {**pending, "scope": scope}, self.challenge_ttl
        )
        # Nothing commits with it: like a failed login's, its event goes out in a batch.
        self.later.record_later(
            "mfa_challenged", user_id=user.id, ip=client.ip, user_agent=client.user_agent, mode=mode
        )
        factors = [f for f in ("totp", "passkey") if f in user.mfa_factors]
        raise MfaRequired(token, [*factors, "recovery_code"])

    async def complete(
        self,
        mfa_token: str,
        client: ClientInfo,
        *,
        mode: str,
        code: str | None = None,
        recovery_code: str | None = None,
    ) -> SecondStep:
        """Check a TOTP or recovery code for the user of `mfa_token`; spend the token.

        `InvalidMfaToken` for an unknown, used, expired or other-mode token;
        `InvalidMfaCode` for a wrong or replayed code (counted by the backoff);
        `RateLimited` while the account's backoff runs.
        """
        user, scope = await self._pending(mfa_token, mode)
        await self._check_code(user, client, code, recovery_code)
        return await self.finish(mfa_token, user, ("pwd", "otp"), mode, scope, client)

    async def reauthenticate(
        self,
        principal: Principal,
        client: ClientInfo,
        *,
        code: str | None = None,
        recovery_code: str | None = None,
    ) -> None:
        """Check a TOTP or recovery code of the caller (re-authentication, S42).

        The same checks and backoff as the login's second step: `InvalidMfaCode` for a
        wrong or replayed code, `RateLimited` while the account's backoff runs.
        """
        user = await active_user(self.users, principal.user_id)
        await self._check_code(user, client, code, recovery_code)
        await self.codes.forget_failures(user.id)

    async def pending_user(self, mfa_token: str, mode: str) -> tuple[User, str | None]:
        """Return the user and scope an mfa_token is for, without spending it."""
        return await self._pending(mfa_token, mode)

    async def finish(
        self,
        mfa_token: str,
        user: User,
        amr: tuple[str, ...],
        mode: str,
        scope: str | None,
        client: ClientInfo,
    ) -> SecondStep:
        """Spend the mfa_token after its factor was checked; one caller only wins.

        The returned step's `mfa_succeeded` event is the caller's to commit, with the
        session or token family it starts.
        """
        # The factor was right, so the account's backoff ends whoever wins the token; its
        # DEL waits in the batch and goes out with the token's GETDEL: one round trip.
        async with self.writes.collecting() if self.writes else contextlib.nullcontext():
            await self.codes.forget_failures(user.id)
            taken = await self.challenges.take(_token_key(mfa_token))
        if taken is None:
            raise InvalidMfaToken()
        return SecondStep(user, amr, mode, scope, mfa_succeeded(user, client, amr))

    async def _pending(self, mfa_token: str, mode: str) -> tuple[User, str | None]:
        value = await self.challenges.peek(_token_key(mfa_token))
        if value is None or value.get("mode") != mode:
            raise InvalidMfaToken()
        user_id, key = UUID(value["user"]), value.get("key")
        if isinstance(key, str):
            user = await self.users.select_user_by_cache_key(key, user_id)
        else:  # a token issued before challenges carried the key
            user = await self.users.select_user_by_id(user_id)
        if user is None or not user.is_active or not user.mfa_factors:
            raise InvalidMfaToken()
        scope = value.get("scope")
        return user, scope if isinstance(scope, str) else None

    async def _check_code(
        self, user: User, client: ClientInfo, code: str | None, recovery_code: str | None
    ) -> None:
        # Under the account's backoff: a TOTP code, else a recovery code (spent).
        await self.codes.check_backoff(user.id)
        if code is not None:
            await self.codes.verify_totp(user, code, client)
        elif recovery_code is not None:
            await self._spend_recovery_code(user, recovery_code, client)
        else:
            raise InvalidMfaCode("Enter the code from your authenticator app or a recovery code.")

    # --- recovery codes ----------------------------------------------------------------

    async def _spend_recovery_code(self, user: User, code: str, client: ClientInfo) -> None:
        normal = normalise_recovery_code(code)
        candidates = self.codes.candidates(user.id, normal)
        spent = None
        if len(normal) == 10:
            spent = await self.repository.use_recovery_code(user.id, candidates)
        if spent is None:
            await self.codes.failed(user.id, client, "recovery_code")
            raise InvalidMfaCode("The recovery code is not valid or was used already.")
        code_hmac, left = spent
        if code_hmac != candidates[0]:
            # Made before the secret key was rotated; spent now, so nothing to re-digest.
            note_fallback_used("recovery_code")
        await self.audit.record(
            "mfa_recovery_code_used",
            user_id=user.id,
            ip=client.ip,
            user_agent=client.user_agent,
            left=left,
        )
        await self._notify_now(user, f"A recovery code was used ({left} left)")

    async def _notify_now(self, user: User, what: str) -> None:
        async with self.repository.transaction() as connection:
            await self.notices.factor_changed_in_transaction(connection, user.id, user.email, what)


def _token_key(token: str) -> str:
    return f"mfa-token:{token}"
