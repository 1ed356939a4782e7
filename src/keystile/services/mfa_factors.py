"""The second factors a user sets up: enrol and remove TOTP, recovery codes (S39, S40).

An authenticator app counts once its pending secret is confirmed with a current code,
which returns ten new recovery codes, shown once (a first passkey gets its codes from
`recovery_code_digests`). Adding or removing a factor is audited, drops the user's
cached row (it says which factors exist) and mails the user a notice that commits with
the change. Operators list and reset a user's factors here. Codes are checked by
`FactorCodes` (`services/mfa_codes.py`), as in the login's second step.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from uuid import UUID

import pyotp
import segno

from keystile.errors import (
    Conflict,
    FactorRequired,
    InvalidMfaCode,
    NotFound,
    ReauthenticationRequired,
)
from keystile.repositories.audit import AuditLog
from keystile.repositories.cached_users import CachedUserRepository
from keystile.repositories.mfa import PostgresMfaRepository
from keystile.services.account_security import active_user
from keystile.services.mfa import FactorNotices, factor_notice
from keystile.services.mfa_codes import RECOVERY_CODE_COUNT, FactorCodes, new_recovery_code
from keystile.services.types import ClientInfo, Principal

__all__ = ["FactorService", "MfaStatus", "TotpSetup"]


@dataclass(frozen=True, slots=True)
class TotpSetup:
    """A pending authenticator-app enrollment: shown to the user, confirmed by a code."""

    secret: str
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True, slots=True)
class MfaStatus:
    totp: bool
    totp_pending: bool
    passkeys: int
    recovery_codes_left: int
    # Made under a previous secret key: dropping its fallback ends them; new ones mend it.
    recovery_codes_outdated: bool


@dataclass(frozen=True, slots=True)
class FactorService:
    """Enroll and remove TOTP, manage recovery codes, list and reset a user's factors."""

    repository: PostgresMfaRepository
    users: CachedUserRepository
    audit: AuditLog
    codes: FactorCodes
    _: KW_ONLY
    issuer: str
    reauth_max_age: int
    notices: FactorNotices

    # --- TOTP --------------------------------------------------------------------------

    async def begin_totp(self, principal: Principal) -> TotpSetup:
        """Make a new secret, pending until `confirm_totp`; 409 if an app is set up."""
        secret = pyotp.random_base32()
        sealed = self.codes.seal(principal.user_id, secret)
        if not await self.repository.upsert_pending_totp(
            principal.user_id, sealed, self.codes.key_id
        ):
            raise Conflict("An authenticator app is already set up; remove it first.")
        uri = pyotp.TOTP(secret).provisioning_uri(name=principal.email, issuer_name=self.issuer)
        svg = segno.make(uri, error="m").svg_inline(
            scale=4, title="QR code for your authenticator app"
        )
        return TotpSetup(secret, uri, svg)

    async def confirm_totp(self, principal: Principal, code: str, client: ClientInfo) -> list[str]:
        """Confirm the pending secret with a current code; return ten new recovery codes."""
        record = await self.repository.select_totp(principal.user_id)
        if record is None or record.confirmed:
            raise NotFound("There is no authenticator app waiting to be confirmed.")
        await self.codes.check_backoff(principal.user_id)
        step = self.codes.matching_step(
            self.codes.open(principal.user_id, record.secret_sealed), code
        )
        if step is None:
            await self.codes.failed(principal.user_id, client, "totp_confirm")
            raise InvalidMfaCode()
        codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        if not await self.repository.confirm_totp(
            principal.user_id,
            step,
            self.codes.digests(principal.user_id, codes),
            then=factor_notice(self.notices, "An authenticator app was added"),
            secret_key_id=self.codes.key_id,
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
        user = await active_user(self.users, principal.user_id)
        if "totp" not in user.mfa_factors:
            raise NotFound("No authenticator app is set up.")
        last = set(user.mfa_factors) == {"totp"}
        if code is not None:
            await self.codes.check_backoff(user.id)
            await self.codes.verify_totp(user, code, client)
        elif last:
            raise FactorRequired()
        elif not recent:
            raise ReauthenticationRequired(self.reauth_max_age)
        if not await self.repository.delete_totp(
            user.id, then=factor_notice(self.notices, "An authenticator app was removed")
        ):
            raise NotFound("No authenticator app is set up.")
        await self._changed(principal, client, "mfa_removed", factor="totp")

    # --- recovery codes ----------------------------------------------------------------

    async def regenerate_recovery_codes(
        self, principal: Principal, client: ClientInfo
    ) -> list[str]:
        """Replace the user's recovery codes with ten new ones; the old stop working."""
        user = await active_user(self.users, principal.user_id)
        if not user.mfa_factors:
            raise NotFound("Set up a second factor first.")
        codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        await self.repository.replace_recovery_codes(
            user.id, self.codes.digests(user.id, codes), self.codes.key_id
        )
        await self._changed(principal, client, "mfa_recovery_codes_regenerated")
        return codes

    def recovery_code_digests(
        self, user_id: UUID, count: int = RECOVERY_CODE_COUNT
    ) -> tuple[list[str], list[bytes]]:
        """Return `count` new recovery codes and what is stored for them."""
        codes = [new_recovery_code() for _ in range(count)]
        return codes, self.codes.digests(user_id, codes)

    # --- status and operators ----------------------------------------------------------

    async def status(self, principal: Principal) -> MfaStatus:
        """Return what the user has set up."""
        record = await self.repository.select_totp(principal.user_id)
        passkeys = await self.repository.select_passkeys(principal.user_id)
        left, outdated = await self.repository.recovery_codes_state(
            principal.user_id, self.codes.key_id
        )
        return MfaStatus(
            totp=record is not None and record.confirmed,
            totp_pending=record is not None and not record.confirmed,
            passkeys=len(passkeys),
            recovery_codes_left=left,
            recovery_codes_outdated=outdated,
        )

    async def factors_of(self, user_id: UUID) -> list[dict[str, str]]:
        """Return the user's factors for an operator: kind, and a passkey's id and name."""
        record = await self.repository.select_totp(user_id)
        found = [{"kind": "totp"}] if record is not None and record.confirmed else []
        for passkey in await self.repository.select_passkeys(user_id):
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
        user = await self.users.select_user_by_id(user_id)
        if user is None:
            raise NotFound("No such user.")
        removed = await self.repository.delete_all(
            user_id,
            then=factor_notice(self.notices, "Every second factor was removed by an operator"),
        )
        await self.users.forget_cached(user.email)
        await self.audit.record(
            "mfa_reset",
            user_id=user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            actor=actor,
            factors_removed=removed,
        )
        return removed

    # --- helpers -----------------------------------------------------------------------

    async def _changed(
        self, principal: Principal, client: ClientInfo, kind: str, **detail: str
    ) -> None:
        # The login lookup caches the user row, which says which factors exist.
        await self.users.forget_cached(principal.email)
        await self.audit.record(
            kind, user_id=principal.user_id, ip=client.ip, user_agent=client.user_agent, **detail
        )
