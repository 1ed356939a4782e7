"""JWT access tokens: signed with the key ring, verified strictly and locally (S13-S15)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import jwt

from keystile.errors import InvalidToken, TokenExpired
from keystile.services.keys import KeyRing

__all__ = ["ACCESS_TOKEN_TYPE", "AccessClaims", "AccessTokenCodec"]

# RFC 9068: the `typ` of a JWT access token, so no other JWT of ours passes as one (S15).
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
_REQUIRED = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "scope", "epoch"]


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says, already type-checked."""

    user_id: UUID
    epoch: int
    scopes: frozenset[str]
    expires_at: float


class AccessTokenCodec:
    """Issue and verify access tokens.

    Verification never lets the token choose how it is checked: the algorithm is
    the one of the key named by `kid` in our ring (a dictionary lookup, never a
    path or a URL), `jku`/`x5u`/`jwk` headers are ignored, any `crit` header is
    refused (we implement no extension), and every registered claim is required.
    """

    def __init__(
        self,
        ring: KeyRing,
        *,
        issuer: str,
        audience: str,
        ttl: int,
        leeway: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ring = ring
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl
        self._leeway = leeway
        self._clock = clock
        self._jwt = jwt.PyJWT()

    @property
    def ttl(self) -> int:
        return self._ttl

    def issue(
        self,
        user_id: UUID,
        epoch: int,
        scopes: Iterable[str],
        *,
        email_verified: bool | None = None,
    ) -> str:
        """Return a signed access token for the user, valid for `ttl` seconds.

        `email_verified` (OpenID Connect's claim) is included when given.
        """
        key = self._ring.signing_key()
        assert key.private_key is not None  # signing_key() only returns keys that can sign
        now = int(self._clock())
        payload = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl,
            "jti": secrets.token_urlsafe(16),
            "scope": " ".join(sorted(scopes)),
            "epoch": epoch,
        }
        if email_verified is not None:
            payload["email_verified"] = email_verified
        return self._jwt.encode(
            payload,
            key.private_key,
            algorithm=key.alg,
            headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
        )

    def verify(self, token: str) -> AccessClaims:
        """Return the claims of a genuine, current token; raise `InvalidToken` otherwise.

        `TokenExpired` (a subclass) tells a client that refreshing will help.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken() from None
        if "crit" in header or header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidToken()
        kid = header.get("kid")
        key = self._ring.verification_key(kid) if isinstance(kid, str) else None
        if key is None or header.get("alg") != key.alg:
            raise InvalidToken()
        try:
            payload = self._jwt.decode(
                token,
                key.public_key,
                algorithms=[key.alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED, "strict_aud": True},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except jwt.PyJWTError:
            raise InvalidToken() from None
        return _claims(payload)


def _claims(payload: dict[str, Any]) -> AccessClaims:
    epoch, scope, exp = payload["epoch"], payload["scope"], payload["exp"]
    if type(epoch) is not int or not isinstance(scope, str) or type(exp) is not int:
        raise InvalidToken()
    try:
        user_id = UUID(str(payload["sub"]))
    except ValueError:
        raise InvalidToken() from None
    return AccessClaims(
        user_id=user_id, epoch=epoch, scopes=frozenset(scope.split()), expires_at=float(exp)
    )
