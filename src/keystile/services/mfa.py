"""Second factors: TOTP and recovery codes, and the second step of a login (S39, S40, S42).

A password login of a user with a factor ends in `MfaRequired`: a random
`mfa_token`, stored (hashed) as a one-time challenge bound to the user, the kind of
login (session or tokens) and its scope. `complete` checks a TOTP or recovery code
against that user and spends the token; only then does the caller start a session
or token family. The second step costs HMACs and a TOTP computation, never a
password hash.

TOTP (RFC 6238, pyotp): 30-second steps, the current one and one either side
accepted; each accepted step is recorded per user in PostgreSQL, and a code of a
step at or before it is a replay. The secret is sealed (AES-GCM) under the secret
key, bound to the user's id. Recovery codes are random, shown once, and stored as
HMACs under a key derived from the secret key (they are 50 random bits: a slow hash
would add nothing but cost). Wrong codes feed a per-account backoff that slows
guessing and never locks the owner out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Protocol
from uuid import UUID

import asyncpg
import pyotp
import segno
from cryptography.exceptions import InvalidTag

from keystile.errors import (
    Conflict,
    FactorRequired,
    InvalidMfaCode,
    InvalidMfaToken,
    MfaRequired,
    NotAuthenticated,
    NotFound,
    ReauthenticationRequired,
)
from keystile.repositories.audit import AuditEntry, AuditLog, BufferedAuditLog
from keystile.repositories.cached_users import CachedUserRepository
from keystile.repositories.mfa import PostgresMfaRepository
from keystile.repositories.users import User
from keystile.services.keys import SecretBox
from keystile.services.login_throttle import refuse_while_backing_off
from keystile.services.opaque_secrets import Hmac
from keystile.services.rate_limits import CounterKeys
from keystile.services.types import ClientInfo, Principal
from keystile.stores.challenges import ChallengeStore
from keystile.stores.rate_limits import Backoff, CounterStore
from keystile.stores.sealing import derive_key

__all__ = [
    "FactorNotices",
    "MfaService",
    "SecondStep",
    "TotpSetup",
    "mfa_succeeded",
    "normalise_recovery_code",
]

STEP_SECONDS = 30
RECOVERY_CODE_COUNT = 10
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud, typed by hand


class FactorNotices(Protocol):
    """Where factor-change notices go: the mail capability's outbox (`EmailFlows`)."""

    async def factor_changed_in_transaction(
        self, connection: asyncpg.Connection, user_id: UUID, email: str, what: str
    ) -> None: ...


class _NoNotices:
    async def factor_changed_in_transaction(
        self, connection: asyncpg.Connection, user_id: UUID, email: str, what: str
    ) -> None:
        return None


@dataclass(frozen=True, slots=True)
class TotpSetup:
    """A pending authenticator-app enrollment: shown to the user, confirmed by a code."""

    secret: str
    otpauth_uri: str
    qr_svg: str


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


@dataclass(frozen=True, slots=True)
class MfaStatus:
    totp: bool
    totp_pending: bool
    passkeys: int
    recovery_codes_left: int


def mfa_succeeded(user: User, client: ClientInfo, amr: tuple[str, ...]) -> AuditEntry:
    """Return the `mfa_succeeded` event of a login completed as `amr` says, for the caller
    to commit with the session or token family it starts."""
    return AuditEntry("mfa_succeeded", user.id, client.ip, client.user_agent, {"amr": list(amr)})


def normalise_recovery_code(code: str) -> str:
    """Return the code as stored: lower case, no dashes or spaces."""
    return "".join(code.lower().split()).replace("-", "")


def _new_recovery_code() -> str:
    body = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))
    return f"{body[:5]}-{body[5:]}"


class MfaService:
    """Enroll and remove TOTP, manage recovery codes, run the second step of a login."""

    def __init__(
        self,
        repository: PostgresMfaRepository,
        users: CachedUserRepository,
        challenges: ChallengeStore,
        audit: AuditLog,
        later: BufferedAuditLog,
        counters: CounterStore,
        keys: CounterKeys,
        *,
        secret: bytes,
        issuer: str,
        challenge_ttl: int,
        backoff: Backoff,
        reauth_max_age: int,
        notices: FactorNotices | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`later` takes events that commit with nothing (`mfa_challenged`), written in
        batches as failed logins' are."""
        self._repository = repository
        self._users = users
        self._challenges = challenges
        self._audit = audit
        self._later = later
        self._counters = counters
        self._keys = keys
        self._box = SecretBox(secret, purpose="totp-secret")
        self._codes = Hmac(_code_key(secret))
        self._issuer = issuer
        self._ttl = challenge_ttl
        self._backoff = backoff
        self._reauth_max_age = reauth_max_age
        self._notices: FactorNotices = notices or _NoNotices()
        self._clock = clock

    @property
    def repository(self) -> PostgresMfaRepository:
        return self._repository

    @property
    def challenges(self) -> ChallengeStore:
        return self._challenges

    # --- the login's second step --------------------------------------------------------

    async def require(
        self, user: User, client: ClientInfo, *, mode: str, scope: str | None = None
    ) -> None:
        """Raise `MfaRequired` with a fresh mfa_token if `user` has a factor (S42)."""
        if not user.mfa_factors:
            return
        token = secrets.token_urlsafe(32)
        # The user's cache key, so the second step finds the user where this login did.
        pending = {"user": str(user.id), "key": self._users.cache_key(user), "mode": mode}
        await self._challenges.put(_token_key(token), {**pending, "scope": scope}, self._ttl)
        # Nothing commits with it: like a failed login's, its event goes out in a batch.
        self._later.record_later(
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
        await self._check_backoff(user.id)
        if code is not None:
            await self._verify_totp(user, code, client)
        elif recovery_code is not None:
            await self._spend_recovery_code(user, recovery_code, client)
        else:
            raise InvalidMfaCode("Enter the code from your authenticator app or a recovery code.")
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
        user = await self._active_user(principal)
        await self._check_backoff(user.id)
        if code is not None:
            await self._verify_totp(user, code, client)
        elif recovery_code is not None:
            await self._spend_recovery_code(user, recovery_code, client)
        else:
            raise InvalidMfaCode("Enter the code from your authenticator app or a recovery code.")
        await self._counters.forget([self._backoff_key(user.id)])

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
        if await self._challenges.take(_token_key(mfa_token)) is None:
            raise InvalidMfaToken()
        await self._counters.forget([self._backoff_key(user.id)])
        return SecondStep(user, amr, mode, scope, mfa_succeeded(user, client, amr))

    async def _pending(self, mfa_token: str, mode: str) -> tuple[User, str | None]:
        value = await self._challenges.peek(_token_key(mfa_token))
        if value is None or value.get("mode") != mode:
            raise InvalidMfaToken()
        user_id, key = UUID(value["user"]), value.get("key")
        if isinstance(key, str):
            user = await self._users.select_user_by_cache_key(key, user_id)
        else:  # a token issued before challenges carried the key
            user = await self._users.select_user_by_id(user_id)
        if user is None or not user.is_active or not user.mfa_factors:
            raise InvalidMfaToken()
        scope = value.get("scope")
        return user, scope if isinstance(scope, str) else None

    # --- TOTP --------------------------------------------------------------------------

    async def begin_totp(self, principal: Principal) -> TotpSetup:
        """Make a new secret, pending until `confirm_totp`; 409 if an app is set up."""
        secret = pyotp.random_base32()
        sealed = self._box.seal(secret.encode(), principal.user_id.bytes)
        if not await self._repository.upsert_pending_totp(principal.user_id, sealed):
            raise Conflict("An authenticator app is already set up; remove it first.")
        uri = pyotp.TOTP(secret).provisioning_uri(name=principal.email, issuer_name=self._issuer)
        svg = segno.make(uri, error="m").svg_inline(
            scale=4, title="QR code for your authenticator app"
        )
        return TotpSetup(secret, uri, svg)

    async def confirm_totp(self, principal: Principal, code: str, client: ClientInfo) -> list[str]:
        """Confirm the pending secret with a current code; return ten new recovery codes."""
        record = await self._repository.select_totp(principal.user_id)
        if record is None or record.confirmed:
            raise NotFound("There is no authenticator app waiting to be confirmed.")
        await self._check_backoff(principal.user_id)
        step = self._matching_step(self._open(principal.user_id, record.secret_sealed), code)
        if step is None:
            await self._failed(principal.user_id, client, "totp_confirm")
            raise InvalidMfaCode()
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        if not await self._repository.confirm_totp(
            principal.user_id,
            step,
            self._code_digests(principal.user_id, codes),
            then=partial(self._notify, "An authenticator app was added"),
        ):
            raise Conflict("The authenticator app was confirmed by another request.")
        await self._changed(principal, client, "mfa_enrolled", factor="totp")
        return codes

    async def remove_totp(
        self,
        principal: Principal,
        client: ClientInfo,
        *,
        code: str | None,
        recent: bool,
    ) -> None:
        """Remove the authenticator app: with a current code, or a recent login (step-up).

        The last factor needs a current code (a fresh factor) whatever the login's age.
        """
        user = await self._active_user(principal)
        if "totp" not in user.mfa_factors:
            raise NotFound("No authenticator app is set up.")
        last = set(user.mfa_factors) == {"totp"}
        if code is not None:
            await self._check_backoff(user.id)
            await self._verify_totp(user, code, client)
        elif last:
            raise FactorRequired()
        elif not recent:
            raise ReauthenticationRequired(self._reauth_max_age)
        if not await self._repository.delete_totp(
            user.id, then=partial(self._notify, "An authenticator app was removed")
        ):
            raise NotFound("No authenticator app is set up.")
        await self._changed(principal, client, "mfa_removed", factor="totp")

    async def _verify_totp(self, user: User, code: str, client: ClientInfo) -> None:
        record = await self._repository.select_totp(user.id)
        if record is None or not record.confirmed:
            await self._failed(user.id, client, "totp")
            raise InvalidMfaCode()
        step = self._matching_step(self._open(user.id, record.secret_sealed), code)
        if step is None:
            await self._failed(user.id, client, "totp")
            raise InvalidMfaCode()
        if step <= record.last_step or not await self._repository.use_totp_step(user.id, step):
            # Accepted once already: whoever sends it again saw it (S39).
            await self._audit.record(
                "mfa_replay", user_id=user.id, ip=client.ip, user_agent=client.user_agent
            )
            await self._failed(user.id, client, "totp_replay")
            raise InvalidMfaCode()

    def _matching_step(self, secret: str, code: str) -> int | None:
        code = "".join(code.split())
        if len(code) != 6 or not code.isdigit():
            return None
        totp = pyotp.TOTP(secret)
        now_step = int(self._clock()) // STEP_SECONDS
        found = None
        for step in (now_step - 1, now_step, now_step + 1):
            # Every candidate is computed and compared: the time taken says nothing.
            if hmac.compare_digest(totp.generate_otp(step), code):
                found = step
        return found

    def _open(self, user_id: UUID, sealed: bytes) -> str:
        try:
            return self._box.open(sealed, user_id.bytes).decode()
        except InvalidTag:
            raise InvalidMfaCode(
                "The authenticator app secret cannot be read; set it up again."
            ) from None

    # --- recovery codes ----------------------------------------------------------------

    async def regenerate_recovery_codes(
        self, principal: Principal, client: ClientInfo
    ) -> list[str]:
        """Replace the user's recovery codes with ten new ones; the old stop working."""
        user = await self._active_user(principal)
        if not user.mfa_factors:
            raise NotFound("Set up a second factor first.")
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        await self._repository.replace_recovery_codes(user.id, self._code_digests(user.id, codes))
        await self._changed(principal, client, "mfa_recovery_codes_regenerated")
        return codes

    def recovery_code_digests(
        self, user_id: UUID, count: int = RECOVERY_CODE_COUNT
    ) -> tuple[list[str], list[bytes]]:
        """Return `count` new recovery codes and what is stored for them."""
        codes = [_new_recovery_code() for _ in range(count)]
        return codes, self._code_digests(user_id, codes)

    async def _spend_recovery_code(self, user: User, code: str, client: ClientInfo) -> None:
        normal = normalise_recovery_code(code)
        left = None
        if len(normal) == 10:
            left = await self._repository.use_recovery_code(
                user.id, self._codes.digest(f"{user.id}:{normal}")
            )
        if left is None:
            await self._failed(user.id, client, "recovery_code")
            raise InvalidMfaCode("The recovery code is not valid or was used already.")
        await self._audit.record(
            "mfa_recovery_code_used",
            user_id=user.id,
            ip=client.ip,
            user_agent=client.user_agent,
            left=left,
        )
        await self._notify_now(user, f"A recovery code was used ({left} left)")

    def _code_digests(self, user_id: UUID, codes: Iterable[str]) -> list[bytes]:
        return [self._codes.digest(f"{user_id}:{normalise_recovery_code(c)}") for c in codes]

    # --- status and operators ----------------------------------------------------------

    async def status(self, principal: Principal) -> MfaStatus:
        """Return what the user has set up."""
        record = await self._repository.select_totp(principal.user_id)
        passkeys = await self._repository.select_passkeys(principal.user_id)
        return MfaStatus(
            totp=record is not None and record.confirmed,
            totp_pending=record is not None and not record.confirmed,
            passkeys=len(passkeys),
            recovery_codes_left=await self._repository.count_recovery_codes(principal.user_id),
        )

    async def factors_of(self, user_id: UUID) -> list[dict[str, str]]:
        """Return the user's factors for an operator: kind, and a passkey's id and name."""
        record = await self._repository.select_totp(user_id)
        found = [{"kind": "totp"}] if record is not None and record.confirmed else []
        for passkey in await self._repository.select_passkeys(user_id):
            found.append(
                {
                    "kind": "passkey",
                    "id": str(passkey.id),
                    "name": passkey.name,
                    "created_at": passkey.created_at.isoformat(),
                }
            )
        return found

    async def reset(self, user_id: UUID, *, actor: str, client: ClientInfo) -> int:
        """Remove every factor of a user (operators: CLI, admin API); audited, notified.

        `NotFound` for an unknown user. Returns how many factors were removed.
        """
        user = await self._users.select_user_by_id(user_id)
        if user is None:
            raise NotFound("No such user.")
        removed = await self._repository.delete_all(
            user_id, then=partial(self._notify, "Every second factor was removed by an operator")
        )
        await self._users.forget_cached(user.email)
        await self._audit.record(
            "mfa_reset",
            user_id=user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            actor=actor,
            factors_removed=removed,
        )
        return removed

    # --- helpers -----------------------------------------------------------------------

    async def _active_user(self, principal: Principal) -> User:
        user = await self._users.select_user_by_id(principal.user_id)
        if user is None or not user.is_active:
            raise NotAuthenticated()
        return user

    async def _changed(
        self, principal: Principal, client: ClientInfo, kind: str, **detail: str
    ) -> None:
        # The login lookup caches the user row, which says which factors exist.
        await self._users.forget_cached(principal.email)
        await self._audit.record(
            kind, user_id=principal.user_id, ip=client.ip, user_agent=client.user_agent, **detail
        )

    async def _notify(
        self, what: str, connection: asyncpg.Connection, user_id: UUID, email: str
    ) -> None:
        await self._notices.factor_changed_in_transaction(connection, user_id, email, what)

    async def _notify_now(self, user: User, what: str) -> None:
        async with self._repository.transaction() as connection:
            await self._notify(what, connection, user.id, user.email)

    def _backoff_key(self, user_id: UUID) -> str:
        return self._keys.key("mfa-backoff:account", str(user_id))

    async def _check_backoff(self, user_id: UUID) -> None:
        refuse_while_backing_off(await self._counters.backoff_wait([self._backoff_key(user_id)]))

    async def _failed(self, user_id: UUID, client: ClientInfo, factor: str) -> None:
        (result,) = await self._counters.backoff_fail([(self._backoff_key(user_id), self._backoff)])
        await self._audit.record(
            "mfa_failed",
            user_id=user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            factor=factor,
            delay_seconds=result.delay,
        )


def _token_key(token: str) -> str:
    return f"mfa-token:{token}"


def _code_key(secret: bytes) -> bytes:
    return derive_key(secret, "recovery codes v1")
