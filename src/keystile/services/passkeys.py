"""Passkeys (WebAuthn, the `webauthn` library): register, list, rename, delete, log in (S41).

Every ceremony starts with options holding a fresh random challenge, stored as a
one-time challenge (Redis, PostgreSQL when Redis is away) for `challenge_ttl`
seconds. The response names its challenge in clientDataJSON; the challenge is
*taken* (deleted) before anything is verified, so it works once whatever the
outcome, and a response to a challenge that is unknown, expired, used or issued for
another ceremony or user is refused. The library checks the origin and the rp id
hash; the sign counter must move forward (a clone gives itself away) unless the
authenticator keeps none (always 0, as synced passkeys do).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import KW_ONLY, dataclass
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from keystile.errors import (
    Conflict,
    EmailNotVerified,
    FactorRequired,
    InvalidPasskey,
    InvalidWebAuthn,
    NotFound,
    ReauthenticationRequired,
)
from keystile.repositories.audit import AuditEntry, AuditLog
from keystile.repositories.cached_users import CachedUserRepository
from keystile.repositories.mfa import Passkey, PostgresMfaRepository
from keystile.repositories.users import User
from keystile.services.account_security import active_user
from keystile.services.mfa import (
    FactorNotices,
    MfaService,
    SecondStep,
    factor_notice,
    mfa_succeeded,
)
from keystile.services.mfa_factors import FactorService
from keystile.services.types import ClientInfo, Principal
from keystile.stores.challenges import ChallengeStore

__all__ = ["PasskeyLogin", "PasskeyService", "relying_party"]

# A real attestation object or assertion is a few KiB at most; anything bigger is refused
# before it is parsed.
MAX_CREDENTIAL_JSON = 16 * 1024


@dataclass(frozen=True, slots=True)
class PasskeyLogin:
    """A verified passkey login: the user, how they authenticated, and its audit event.

    As `SecondStep`: the caller commits `event` with the session or token family.
    """

    user: User
    amr: tuple[str, ...]
    event: AuditEntry


def relying_party(public_url: str, rp_id: str | None) -> tuple[str, str]:
    """Return (rp id, origin) for `public_url`: the rp id defaults to its host."""
    parts = urlsplit(public_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return rp_id or (parts.hostname or "localhost"), origin


@dataclass(frozen=True, slots=True)
class PasskeyService:
    """WebAuthn ceremonies and the user's list of passkeys."""

    repository: PostgresMfaRepository
    users: CachedUserRepository
    challenges: ChallengeStore
    mfa: MfaService
    factors: FactorService
    audit: AuditLog
    _: KW_ONLY
    rp_id: str
    rp_name: str
    origin: str
    challenge_ttl: int
    per_user: int
    reauth_max_age: int
    notices: FactorNotices
    require_verified_email: bool = False

    # --- registration ------------------------------------------------------------------

    async def registration_options(self, principal: Principal) -> dict[str, Any]:
        """Return creation options for a new discoverable passkey of the caller."""
        existing = await self.repository.select_passkeys(principal.user_id)
        if len(existing) >= self.per_user:
            raise Conflict(f"You have {self.per_user} passkeys; delete one first.")
        challenge = secrets.token_bytes(32)
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self.rp_name,
            user_name=principal.email,
            user_id=principal.user_id.bytes,
            challenge=challenge,
            timeout=self.challenge_ttl * 1000,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[
                PublicKeyCredentialDescriptor(id=passkey.credential_id) for passkey in existing
            ],
        )
        await self.challenges.put(
            _challenge_key("register", challenge),
            {"user": str(principal.user_id)},
            self.challenge_ttl,
        )
        parsed: dict[str, Any] = json.loads(options_to_json(options))
        return parsed

    async def register(
        self, principal: Principal, credential: dict[str, Any], name: str | None, client: ClientInfo
    ) -> tuple[Passkey, list[str]]:
        """Verify a registration response and store the passkey; nothing is stored on error.

        Returns the passkey and, when it is the user's first factor, ten recovery codes.
        """
        challenge = _challenge_of(credential, "webauthn.create")
        pending = await self.challenges.take(_challenge_key("register", challenge))
        if pending is None or pending.get("user") != str(principal.user_id):
            raise InvalidWebAuthn("This passkey request has expired or was already used.")
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
            )
        except (WebAuthnException, ValueError, KeyError, TypeError) as error:
            await self._refused(principal.user_id, client, "passkey_registration", error)
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
        challenge = secrets.token_bytes(32)
        options = generate_authentication_options(
            rp_id=self.rp_id,
            challenge=challenge,
            timeout=self.challenge_ttl * 1000,
            allow_credentials=allow,
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        await self.challenges.put(
            _challenge_key("authenticate", challenge),
            {"mfa": mfa_token is not None},
            self.challenge_ttl,
        )
        parsed: dict[str, Any] = json.loads(options_to_json(options))
        return parsed

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
        challenge = _challenge_of(credential, "webauthn.get")
        if await self.challenges.take(_challenge_key("authenticate", challenge)) is None:
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
        challenge = secrets.token_bytes(32)
        options = generate_authentication_options(
            rp_id=self.rp_id,
            challenge=challenge,
            timeout=self.challenge_ttl * 1000,
            allow_credentials=[PublicKeyCredentialDescriptor(id=p.credential_id) for p in passkeys],
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        await self.challenges.put(
            _challenge_key("reauthenticate", challenge),
            {"user": str(principal.user_id)},
            self.challenge_ttl,
        )
        parsed: dict[str, Any] = json.loads(options_to_json(options))
        return parsed

    async def reauthenticate(
        self, principal: Principal, credential: dict[str, Any], client: ClientInfo
    ) -> None:
        """Verify an assertion by one of the caller's passkeys; another user's is refused.

        The challenge must be one issued to this caller by `reauthentication_options`
        and is spent whatever the outcome. `InvalidWebAuthn`, `InvalidPasskey`.
        """
        challenge = _challenge_of(credential, "webauthn.get")
        pending = await self.challenges.take(_challenge_key("reauthenticate", challenge))
        if pending is None or pending.get("user") != str(principal.user_id):
            raise InvalidWebAuthn("This passkey request has expired or was already used.")
        await self._verify_assertion(
            credential, client, challenge, owner=principal.user_id, require_user_verification=True
        )

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
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                credential_public_key=passkey.public_key,
                credential_current_sign_count=passkey.sign_count,
                require_user_verification=require_user_verification,
            )
        except (WebAuthnException, ValueError, KeyError, TypeError) as error:
            if "sign count" in str(error).lower():
                await self.audit.record(
                    "passkey_counter_regression",
                    user_id=passkey.user_id,
                    ip=client.ip,
                    user_agent=client.user_agent,
                    passkey_id=str(passkey.id),
                    stored=passkey.sign_count,
                )
            else:
                await self._refused(passkey.user_id, client, "passkey", error)
            raise InvalidPasskey() from None
        if not await self.repository.update_passkey_use(
            passkey.id, passkey.sign_count, verified.new_sign_count, verified.credential_backed_up
        ):
            # Another login with the same counter won the race: one of the two is a clone.
            await self.audit.record(
                "passkey_counter_regression",
                user_id=passkey.user_id,
                ip=client.ip,
                user_agent=client.user_agent,
                passkey_id=str(passkey.id),
                stored=passkey.sign_count,
            )
            raise InvalidPasskey()
        return passkey

    # --- helpers -------------------------------------------------------------------------

    async def _refused(
        self, user_id: UUID, client: ClientInfo, factor: str, error: Exception
    ) -> None:
        await self.audit.record(
            "mfa_failed",
            user_id=user_id,
            ip=client.ip,
            user_agent=client.user_agent,
            factor=factor,
            reason=str(error)[:200],
        )


def _challenge_key(ceremony: str, challenge: bytes) -> str:
    return f"webauthn-{ceremony}:{bytes_to_base64url(challenge)}"


def _challenge_of(credential: dict[str, Any], kind: str) -> bytes:
    """Return the challenge a response answers, after cheap shape and size checks."""
    try:
        size = len(json.dumps(credential))
        response = credential["response"]
        client_data = json.loads(base64url_to_bytes(response["clientDataJSON"]))
        challenge = base64url_to_bytes(client_data["challenge"])
        ceremony = client_data["type"]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InvalidWebAuthn() from None
    if size > MAX_CREDENTIAL_JSON:
        raise InvalidWebAuthn("The passkey response is too large.")
    if ceremony != kind or not 16 <= len(challenge) <= 64:
        raise InvalidWebAuthn()
    return challenge
