"""The one-time challenges of passkey ceremonies, and this relying party (S41).

What registration (`services/passkey_factors.py`) and login and step-up
(`services/passkeys.py`) share. Every ceremony starts with options holding a fresh
random challenge, stored as a one-time challenge (Redis, PostgreSQL when Redis is
away) for `ttl` seconds. The response names its challenge in clientDataJSON; the
challenge is *taken* (deleted) before anything is verified, so it works once whatever
the outcome, and a response to a challenge that is unknown, expired, used or issued
for another ceremony or user is refused. The library checks the origin and the rp id
hash of every response against this relying party's.
"""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, dataclass
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from webauthn import options_to_json
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.structs import (
    PublicKeyCredentialCreationOptions,
    PublicKeyCredentialRequestOptions,
)

from keystile.errors import InvalidWebAuthn
from keystile.repositories.audit import AuditLog
from keystile.services.types import ClientInfo
from keystile.stores.challenges import ChallengeStore

__all__ = ["PasskeyChallenges", "relying_party"]

# A real attestation object or assertion is a few KiB at most; anything bigger is refused
# before it is parsed.
MAX_CREDENTIAL_JSON = 16 * 1024


def relying_party(public_url: str, rp_id: str | None) -> tuple[str, str]:
    """Return (rp id, origin) for `public_url`: the rp id defaults to its host."""
    parts = urlsplit(public_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return rp_id or (parts.hostname or "localhost"), origin


@dataclass(frozen=True, slots=True)
class PasskeyChallenges:
    """Issue and take the challenges of passkey ceremonies; audit a refused response.

    One instance serves registration (`PasskeyFactorService`) and login and step-up
    (`PasskeyService`), with the rp id and origin every response is checked against.
    """

    store: ChallengeStore
    audit: AuditLog
    _: KW_ONLY
    rp_id: str
    origin: str
    ttl: int

    async def issue(
        self,
        ceremony: str,
        challenge: bytes,
        options: PublicKeyCredentialCreationOptions | PublicKeyCredentialRequestOptions,
        pending: dict[str, Any],
    ) -> dict[str, Any]:
        """Store `challenge` for one `ceremony`, with `pending`; return `options` as JSON."""
        await self.store.put(_challenge_key(ceremony, challenge), pending, self.ttl)
        parsed: dict[str, Any] = json.loads(options_to_json(options))
        return parsed

    async def take(
        self, ceremony: str, credential: dict[str, Any], kind: str
    ) -> tuple[bytes, dict[str, Any] | None]:
        """Return the challenge `credential` answers and what `issue` stored; spend it.

        `kind` is the clientDataJSON type the ceremony expects (`webauthn.create`,
        `webauthn.get`): `InvalidWebAuthn` for a response of another kind or shape.
        What was stored is None for a challenge unknown, expired, used, or issued for
        another ceremony.
        """
        challenge = _challenge_of(credential, kind)
        return challenge, await self.store.take(_challenge_key(ceremony, challenge))

    async def refused(
        self, user_id: UUID, client: ClientInfo, factor: str, error: Exception
    ) -> None:
        """Audit a response the library refused (`mfa_failed`, with its reason)."""
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
