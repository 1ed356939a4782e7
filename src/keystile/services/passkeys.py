"""Log in and step up with a passkey (WebAuthn, the `webauthn` library; S41, S42).

A passkey logs in on its own (passwordless: discoverable, user verification
required), completes a password login's second step (`MfaService`: only that user's
passkeys), or refreshes the caller's login (step-up: only the caller's own). Each
answers a one-time challenge of `PasskeyChallenges` (`services/passkey_challenges.py`),
which registration (`services/passkey_factors.py`) shares. The sign counter must move
forward (a clone gives itself away) unless the authenticator keeps none (always 0, as
synced passkeys do).
"""

from __future__ import annotations

import secrets
from dataclasses import KW_ONLY, dataclass
from typing import Any
from uuid import UUID

from webauthn import generate_authentication_options, verify_authentication_response
from webauthn.helpers import base64url_to_bytes
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

from keystile.errors import EmailNotVerified, InvalidPasskey, InvalidWebAuthn, NotFound
from keystile.repositories.audit import AuditEntry, AuditLog
from keystile.repositories.cached_users import CachedUserRepository
from keystile.repositories.mfa import Passkey, PostgresMfaRepository
from keystile.repositories.users import User
from keystile.services.account_security import active_user
from keystile.services.mfa import MfaService, SecondStep, mfa_succeeded
from keystile.services.passkey_challenges import PasskeyChallenges
from keystile.services.types import ClientInfo, Principal

__all__ = ["PasskeyLogin", "PasskeyService"]


@dataclass(frozen=True, slots=True)
class PasskeyLogin:
    """A verified passkey login: the user, how they authenticated, and its audit event.

    As `SecondStep`: the caller commits `event` with the session or token family.
    """

    user: User
    amr: tuple[str, ...]
    event: AuditEntry


@dataclass(frozen=True, slots=True)
class PasskeyService:
    """Log in with a passkey, alone or as a second step; re-authenticate with one."""

    repository: PostgresMfaRepository
    users: CachedUserRepository
    challenges: PasskeyChallenges
    mfa: MfaService
    audit: AuditLog
    _: KW_ONLY
    require_verified_email: bool = False

    # --- authentication ------------------------------------------------------------------

    async def authentication_options(self, mfa_token: str | None, mode: str) -> dict[str, Any]:
        """Return request options: discoverable (passwordless), or the user's passkeys (MFA)."""
        allow: list[PublicKeyCredentialDescriptor] = []
        if mfa_token is not None:
            user, _ = await self.mfa.pending_user(mfa_token, mode)
            allow = [
                PublicKeyCredentialDescriptor(id=p.credential_id)
                for p in await self.repository.select_passkeys(user.id)
            ]
        return await self._request_options("authenticate", allow, {"mfa": mfa_token is not None})

    async def authenticate(
        self,
        credential: dict[str, Any],
        client: ClientInfo,
        *,
        mode: str,
        mfa_token: str | None = None,
    ) -> SecondStep | PasskeyLogin:
        """Verify an assertion: a passwordless login, or the second step of `mfa_token`."""
        pending_user = None
        scope = None
        if mfa_token is not None:
            pending_user, scope = await self.mfa.pending_user(mfa_token, mode)
        challenge, pending = await self.challenges.take("authenticate", credential, "webauthn.get")
        if pending is None:
            raise InvalidWebAuthn("This passkey request has expired or was already used.")
        passkey = await self._verify_assertion(
            credential,
            client,
            challenge,
            owner=None if pending_user is None else pending_user.id,
            require_user_verification=mfa_token is None,
        )
        if mfa_token is not None and pending_user is not None:
            return await self.mfa.finish(
                mfa_token, pending_user, ("pwd", "hwk"), mode, scope, client
            )
        user = await active_user(self.users, passkey.user_id)
        if self.require_verified_email and not user.email_verified:
            # The same rule as a password login (`email_verification = "required"`).
            raise EmailNotVerified()
        return PasskeyLogin(user, ("hwk",), mfa_succeeded(user, client, ("hwk",)))

    # --- re-authentication (step-up, S42) ------------------------------------------------

    async def reauthentication_options(self, principal: Principal) -> dict[str, Any]:
        """Return request options for one of the caller's own passkeys (re-authentication)."""
        passkeys = await self.repository.select_passkeys(principal.user_id)
        if not passkeys:
            raise NotFound("You have no passkey; use your password instead.")
        return await self._request_options(
            "reauthenticate",
            [PublicKeyCredentialDescriptor(id=p.credential_id) for p in passkeys],
            {"user": str(principal.user_id)},
        )

    async def reauthenticate(
        self, principal: Principal, credential: dict[str, Any], client: ClientInfo
    ) -> None:
        """Verify an assertion by one of the caller's passkeys; another user's is refused.

        The challenge must be one issued to this caller by `reauthentication_options`
        and is spent whatever the outcome. `InvalidWebAuthn`, `InvalidPasskey`.
        """
        challenge, pending = await self.challenges.take(
            "reauthenticate", credential, "webauthn.get"
        )
        if pending is None or pending.get("user") != str(principal.user_id):
            raise InvalidWebAuthn("This passkey request has expired or was already used.")
        await self._verify_assertion(
            credential, client, challenge, owner=principal.user_id, require_user_verification=True
        )

    # --- helpers -------------------------------------------------------------------------

    async def _request_options(
        self,
        ceremony: str,
        allow: list[PublicKeyCredentialDescriptor],
        pending: dict[str, Any],
    ) -> dict[str, Any]:
        challenge = secrets.token_bytes(32)
        options = generate_authentication_options(
            rp_id=self.challenges.rp_id,
            challenge=challenge,
            timeout=self.challenges.ttl * 1000,
            allow_credentials=allow,
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        return await self.challenges.issue(ceremony, challenge, options, pending)

    async def _verify_assertion(
        self,
        credential: dict[str, Any],
        client: ClientInfo,
        challenge: bytes,
        *,
        owner: UUID | None,
        require_user_verification: bool,
    ) -> Passkey:
        # The challenge was taken already; check the assertion and move the counter on.
        raw_id = credential.get("rawId") or credential.get("id")
        try:
            credential_id = base64url_to_bytes(raw_id) if isinstance(raw_id, str) else b""
        except ValueError:
            raise InvalidWebAuthn() from None
        passkey = await self.repository.select_passkey_by_credential(credential_id)
        if passkey is None or (owner is not None and passkey.user_id != owner):
            # Another user's passkey proves nothing about this one (S41).
            raise InvalidPasskey()
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.challenges.rp_id,
                expected_origin=self.challenges.origin,
                credential_public_key=passkey.public_key,
                credential_current_sign_count=passkey.sign_count,
                require_user_verification=require_user_verification,
            )
        except (WebAuthnException, ValueError, KeyError, TypeError) as error:
            if "sign count" in str(error).lower():
                await self._counter_regression(passkey, client)
            else:
                await self.challenges.refused(passkey.user_id, client, "passkey", error)
            raise InvalidPasskey() from None
        if not await self.repository.update_passkey_use(
            passkey.id, passkey.sign_count, verified.new_sign_count, verified.credential_backed_up
        ):
            # Another login with the same counter won the race: one of the two is a clone.
            await self._counter_regression(passkey, client)
            raise InvalidPasskey()
        return passkey

    async def _counter_regression(self, passkey: Passkey, client: ClientInfo) -> None:
        await self.audit.record(
            "passkey_counter_regression",
            user_id=passkey.user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            passkey_id=str(passkey.id),
            stored=passkey.sign_count,
        )
