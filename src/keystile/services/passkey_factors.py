"""The passkeys a user sets up: register, list, rename, delete (S41).

A passkey is registered by a WebAuthn creation ceremony whose one-time challenge is
`PasskeyChallenges`' (`services/passkey_challenges.py`), as login's and step-up's are
(`services/passkeys.py`); the first factor of an account also gets its ten recovery
codes (`FactorService.recovery_code_digests`). Adding or removing a passkey is
audited, drops the user's cached row (it says which factors exist) and mails the user
a notice that commits with the change.
"""

from __future__ import annotations

import secrets
from dataclasses import KW_ONLY, dataclass
from typing import Any
from uuid import UUID

from webauthn import generate_registration_options, verify_registration_response
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from keystile.errors import (
    Conflict,
    FactorRequired,
    InvalidWebAuthn,
    NotFound,
    ReauthenticationRequired,
)
from keystile.repositories.audit import AuditLog
from keystile.repositories.cached_users import CachedUserRepository
from keystile.repositories.mfa import Passkey, PostgresMfaRepository
from keystile.services.account_security import active_user
from keystile.services.mfa import FactorNotices, factor_notice
from keystile.services.mfa_factors import FactorService
from keystile.services.passkey_challenges import PasskeyChallenges
from keystile.services.types import ClientInfo, Principal

__all__ = ["PasskeyFactorService"]


@dataclass(frozen=True, slots=True)
class PasskeyFactorService:
    """Register a user's passkeys; list, rename and delete them."""

    repository: PostgresMfaRepository
    users: CachedUserRepository
    challenges: PasskeyChallenges
    factors: FactorService
    audit: AuditLog
    _: KW_ONLY
    rp_name: str
    per_user: int
    reauth_max_age: int
    notices: FactorNotices

    # --- registration ------------------------------------------------------------------

    async def registration_options(self, principal: Principal) -> dict[str, Any]:
        """Return creation options for a new discoverable passkey of the caller."""
        existing = await self.repository.select_passkeys(principal.user_id)
        if len(existing) >= self.per_user:
            raise Conflict(f"You have {self.per_user} passkeys; delete one first.")
        challenge = secrets.token_bytes(32)
        options = generate_registration_options(
            rp_id=self.challenges.rp_id,
            rp_name=self.rp_name,
            user_name=principal.email,
            user_id=principal.user_id.bytes,
            challenge=challenge,
            timeout=self.challenges.ttl * 1000,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[
                PublicKeyCredentialDescriptor(id=passkey.credential_id) for passkey in existing
            ],
        )
        return await self.challenges.issue(
            "register", challenge, options, {"user": str(principal.user_id)}
        )

    async def register(
        self, principal: Principal, credential: dict[str, Any], name: str | None, client: ClientInfo
    ) -> tuple[Passkey, list[str]]:
        """Verify a registration response and store the passkey; nothing is stored on error.

        Returns the passkey and, when it is the user's first factor, ten recovery codes.
        """
        challenge, pending = await self.challenges.take("register", credential, "webauthn.create")
        if pending is None or pending.get("user") != str(principal.user_id):
            raise InvalidWebAuthn("This passkey request has expired or was already used.")
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.challenges.rp_id,
                expected_origin=self.challenges.origin,
            )
        except (WebAuthnException, ValueError, KeyError, TypeError) as error:
            await self.challenges.refused(principal.user_id, client, "passkey_registration", error)
            raise InvalidWebAuthn() from None
        user = await active_user(self.users, principal.user_id)
        codes: list[str] = []
        digests: list[bytes] = []
        if not user.mfa_factors:
            codes, digests = self.factors.recovery_code_digests(user.id)
        transports = credential.get("response", {}).get("transports") or []
        passkey = await self.repository.insert_passkey(
            user.id,
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            backup_eligible=verified.credential_device_type.value == "multi_device",
            backed_up=verified.credential_backed_up,
            transports=[str(t)[:32] for t in transports[:8] if isinstance(t, str)],
            name=(name or "Passkey").strip()[:100] or "Passkey",
            codes=digests,
            codes_key_id=self.factors.codes.key_id,
            then=factor_notice(self.notices, "A passkey was added"),
        )
        if passkey is None:
            raise Conflict("This passkey is registered already.")
        await self.users.forget_cached(user.email)
        await self.audit.record(
            "mfa_enrolled",
            user_id=user.id,
            ip=client.ip,
            user_agent=client.user_agent,
            factor="passkey",
            passkey_id=str(passkey.id),
        )
        return passkey, codes

    # --- the user's passkeys -------------------------------------------------------------

    async def list(self, principal: Principal) -> list[Passkey]:
        return await self.repository.select_passkeys(principal.user_id)

    async def rename(self, principal: Principal, passkey_id: UUID, name: str) -> None:
        if not await self.repository.rename_passkey(principal.user_id, passkey_id, name):
            raise NotFound("No such passkey.")

    async def delete(
        self, principal: Principal, passkey_id: UUID, client: ClientInfo, *, recent: bool
    ) -> None:
        """Delete a passkey after a recent login; the last factor needs a fresh passkey login.

        "Fresh" is a recent login that used a passkey (`hwk` in the caller's amr): a
        stolen password session cannot remove the account's only second factor.
        """
        user = await active_user(self.users, principal.user_id)
        if not recent:
            raise ReauthenticationRequired(self.reauth_max_age)
        passkeys = await self.repository.select_passkeys(user.id)
        if not any(p.id == passkey_id for p in passkeys):
            raise NotFound("No such passkey.")
        last = len(passkeys) == 1 and "totp" not in user.mfa_factors
        if last and "hwk" not in principal.amr:
            raise FactorRequired("Removing your last passkey needs a login with a passkey first.")
        if not await self.repository.delete_passkey(
            user.id, passkey_id, then=factor_notice(self.notices, "A passkey was removed")
        ):
            raise NotFound("No such passkey.")
        await self.users.forget_cached(user.email)
        await self.audit.record(
            "mfa_removed",
            user_id=user.id,
            ip=client.ip,
            user_agent=client.user_agent,
            factor="passkey",
            passkey_id=str(passkey_id),
        )
