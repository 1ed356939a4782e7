"""A user's TOTP and recovery codes: sealed, hashed, checked (S39, S40).

What the login's second step (`services/mfa.py`) and the management of factors
(`services/mfa_factors.py`) share. TOTP (RFC 6238, pyotp): 30-second steps, the
current one and one either side accepted; each accepted step is recorded per user in
PostgreSQL, and a code of a step at or before it is a replay. The secret is sealed
(AES-GCM) under the secret key, bound to the user's id. Recovery codes are random,
shown once, and stored as HMACs under a key derived from the secret key (they are 50
random bits: a slow hash would add nothing but cost). Wrong codes feed a per-account
backoff that slows guessing and never locks the owner out. Both are stored with the id
of the secret key they are under, which `keystile secret-keys status` counts.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, InitVar, dataclass, field
from uuid import UUID

import pyotp
from cryptography.exceptions import InvalidTag

from keystile.errors import DependencyUnavailable, InvalidMfaCode
from keystile.repositories.audit import AuditLog
from keystile.repositories.mfa import PostgresMfaRepository
from keystile.repositories.users import User
from keystile.secret_keys import KeyUse, SecretKeys
from keystile.services.keys import SecretBox
from keystile.services.login_throttle import refuse_while_backing_off
from keystile.services.opaque_secrets import Hmac
from keystile.services.rate_limits import CounterKeys
from keystile.services.types import ClientInfo
from keystile.stores.rate_limits import Backoff, CounterStore

__all__ = [
    "RECOVERY_CODE_COUNT",
    "STEP_SECONDS",
    "FactorCodes",
    "new_recovery_code",
    "normalise_recovery_code",
]

STEP_SECONDS = 30
RECOVERY_CODE_COUNT = 10
_RECOVERY_CODES = "recovery codes v1"  # the purpose of their HMAC key
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud, typed by hand
_PAGE = 1000  # sealed secrets read at a time to find the key they are under


def normalise_recovery_code(code: str) -> str:
    """Return the code as stored: lower case, no dashes or spaces."""
    return "".join(code.lower().split()).replace("-", "")


def new_recovery_code() -> str:
    """Return a new random recovery code as the user sees it (`abcde-fghjk`)."""
    body = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))
    return f"{body[:5]}-{body[5:]}"


@dataclass(frozen=True, slots=True)
class FactorCodes:
    """Seal TOTP secrets, hash recovery codes, check TOTP codes under the account backoff.

    One instance serves the second step (`MfaService`) and enrolment (`FactorService`),
    so wrong codes at either count against the same backoff.
    """

    repository: PostgresMfaRepository
    audit: AuditLog
    counters: CounterStore
    keys: CounterKeys
    _: KW_ONLY
    secret: InitVar[SecretKeys]  # only the keys derived from it are kept
    backoff: Backoff
    clock: Callable[[], float] = time.time  # what TOTP codes are checked against (epoch seconds)
    key_ids: tuple[str, ...] = field(init=False)  # of the current secret key, then previous
    _box: SecretBox = field(init=False, repr=False)
    _codes: Hmac = field(init=False, repr=False)

    def __post_init__(self, secret: SecretKeys) -> None:
        object.__setattr__(self, "key_ids", secret.ids)
        object.__setattr__(self, "_box", SecretBox(secret, purpose="totp-secret"))
        object.__setattr__(self, "_codes", Hmac.under(secret, _RECOVERY_CODES))

    @property
    def key_id(self) -> str:
        """The id of the secret key new secrets are sealed and new codes digested under."""
        return self.key_ids[0]

    # --- TOTP --------------------------------------------------------------------------

    async def verify_totp(self, user: User, code: str, client: ClientInfo) -> None:
        """Check a TOTP code of `user` and record its step, after `check_backoff`.

        `InvalidMfaCode` for a wrong or replayed code (counted by the backoff).
        """
        record = await self.repository.select_totp(user.id)
        if record is None or not record.confirmed:
            await self.failed(user.id, client, "totp")
            raise InvalidMfaCode()
        secret, stale = self._open_stale(user.id, record.secret_sealed)
        if stale:
            await self._seal_again(user.id, secret, record.secret_sealed)
        step = self.matching_step(secret, code)
        if step is None:
            await self.failed(user.id, client, "totp")
            raise InvalidMfaCode()
        if step <= record.last_step or not await self.repository.use_totp_step(user.id, step):
            # Accepted once already: whoever sends it again saw it (S39).
            await self.audit.record(
                "mfa_replay", user_id=user.id, ip=client.ip, user_agent=client.user_agent
            )
            await self.failed(user.id, client, "totp_replay")
            raise InvalidMfaCode()

    def matching_step(self, secret: str, code: str) -> int | None:
        """Return the time step `code` is of (the current one or one either side), or None."""
        code = "".join(code.split())
        if len(code) != 6 or not code.isdigit():
            return None
        totp = pyotp.TOTP(secret)
        now_step = int(self.clock()) // STEP_SECONDS
        found = None
        for step in (now_step - 1, now_step, now_step + 1):
            # Every candidate is computed and compared: the time taken says nothing.
            if hmac.compare_digest(totp.generate_otp(step), code):
                found = step
        return found

    def seal(self, user_id: UUID, secret: str) -> bytes:
        """Return a TOTP secret sealed for storage, bound to the user's id."""
        return self._box.seal(secret.encode(), user_id.bytes)

    def open(self, user_id: UUID, sealed: bytes) -> str:
        """Return a sealed TOTP secret; `InvalidMfaCode` if it cannot be read."""
        return self._open_stale(user_id, sealed)[0]

    def _open_stale(self, user_id: UUID, sealed: bytes) -> tuple[str, bool]:
        try:
            secret, stale = self._box.open_stale(sealed, user_id.bytes)
        except InvalidTag:
            raise InvalidMfaCode(
                "The authenticator app secret cannot be read; set it up again."
            ) from None
        return secret.decode(), stale

    async def _seal_again(self, user_id: UUID, secret: str, old: bytes) -> None:
        """Seal under the current secret key a TOTP secret sealed under a previous one.

        Then it no longer needs the fallback. Bookkeeping: PostgreSQL being down leaves
        it for the next code; the UPDATE only replaces the sealed secret it read.
        """
        with contextlib.suppress(DependencyUnavailable):
            await self.repository.reseal_totp(user_id, old, self.seal(user_id, secret), self.key_id)

    def sealed_under(self, user_id: UUID, sealed: bytes) -> str | None:
        """Return the id of the secret key a sealed TOTP secret opens under; None if none."""
        index = self._box.key_index(sealed, user_id.bytes)
        return None if index is None else self.key_ids[index]

    async def totp_by_secret_key(self) -> KeyUse:
        """Count confirmed TOTP secrets by the secret key they are under.

        A secret sealed before keystile recorded the key is opened under each key to
        find out (a scan, for an operator's command): one no key opens counts as under a
        key not configured, so nothing is left `unrecorded`.
        """
        counts: dict[str | None, int] = dict(await self.repository.count_totp_by_secret_key())
        unknown = counts.pop(None, 0)
        lost, after = 0, None
        while unknown and (page := await self.repository.select_unrecorded_totp(after, _PAGE)):
            for user_id, sealed in page:
                kid = self.sealed_under(user_id, sealed)
                if kid is None:
                    lost += 1
                else:
                    counts[kid] = counts.get(kid, 0) + 1
            after = page[-1][0]
        use = KeyUse.of(self.key_ids, counts)
        return KeyUse(use.current, use.fallbacks, use.unconfigured + lost, 0)

    # --- recovery codes ----------------------------------------------------------------

    def digest(self, user_id: UUID, normal: str) -> bytes:
        """Return what is stored for a recovery code (`normalise_recovery_code`d)."""
        return self._codes.digest(f"{user_id}:{normal}")

    def candidates(self, user_id: UUID, normal: str) -> list[bytes]:
        """Return what may be stored for a recovery code: under the current secret key first,
        then under each previous one (codes made before a rotation)."""
        return self._codes.digests_under_each(f"{user_id}:{normal}")

    def digests(self, user_id: UUID, codes: Iterable[str]) -> list[bytes]:
        """Return what is stored for each of a user's new recovery codes (under `key_id`)."""
        return [self.digest(user_id, normalise_recovery_code(c)) for c in codes]

    async def recovery_codes_by_secret_key(self) -> tuple[KeyUse, KeyUse]:
        """Count unused recovery codes by the secret key they are under, and their users.

        Only their HMAC is kept: one with no recorded key cannot be told apart.
        """
        found = await self.repository.count_recovery_codes_by_secret_key()
        codes = {kid: n for kid, (n, _) in found.items()}
        users = {kid: n for kid, (_, n) in found.items()}
        return KeyUse.of(self.key_ids, codes), KeyUse.of(self.key_ids, users)

    # --- the per-account backoff of wrong codes ----------------------------------------

    async def check_backoff(self, user_id: UUID) -> None:
        """Raise `RateLimited` while the account's backoff runs."""
        refuse_while_backing_off(await self.counters.backoff_wait([self._backoff_key(user_id)]))

    async def failed(self, user_id: UUID, client: ClientInfo, factor: str) -> None:
        """Count a wrong code against the account's backoff; audit it (`mfa_failed`)."""
        (result,) = await self.counters.backoff_fail([(self._backoff_key(user_id), self.backoff)])
        await self.audit.record(
            "mfa_failed",
            user_id=user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            factor=factor,
            delay_seconds=result.delay,
        )

    async def forget_failures(self, user_id: UUID) -> None:
        """End the account's backoff: a right code was given."""
        await self.counters.forget([self._backoff_key(user_id)])

    def _backoff_key(self, user_id: UUID) -> str:
        return self.keys.key("mfa-backoff:account", str(user_id))
